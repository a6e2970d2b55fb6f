"""zaptrace: how long is a page's mapcount dropped while a stale TLB entry may still exist?"""

__version__ = "0.1.0"
