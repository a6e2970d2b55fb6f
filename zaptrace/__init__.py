"""zaptrace: how long is a page's mapcount dropped while a stale TLB entry may still exist?"""

__version__ = "0.1.0"

# Subpackages kept in top-level folders of the source tree (analysis/,
# probes/, vm/, beside zaptrace/) and installed inside this package
# (pyproject.toml's package-dir), so that nothing lands in site-packages under
# a generic name.  An installed zaptrace holds them as real subdirectories.
_SOURCE_TREE_SUBPACKAGES = ("analysis", "probes", "vm")


def _map_source_tree_subpackages() -> None:
    """Make ``zaptrace.analysis`` & co. importable when running from a checkout.

    The QEMU guest and ``PYTHONPATH=<checkout> python -m zaptrace`` run the
    source tree without installing it.  Only there (``analysis/`` beside this
    package, no ``zaptrace/analysis``) a finder maps exactly the three names
    ``zaptrace.analysis``, ``zaptrace.probes`` and ``zaptrace.vm`` to those
    folders; their own modules are then found through the subpackage's
    ``__path__`` as usual.  Not ``__path__.append(checkout)``: that would
    also expose ``zaptrace.tests``, ``zaptrace.bench`` and ``zaptrace.zaptrace``.
    The package's real path is used, so a symlink to ``zaptrace/`` (the
    guest's /opt/zaptrace/lib/zaptrace) still finds the checkout.  An
    editable install maps the same names to the same folders by itself.
    """
    import os
    import sys

    here = os.path.dirname(os.path.realpath(__file__))
    top = os.path.dirname(here)
    if os.path.exists(os.path.join(here, "analysis")) or \
            not os.path.isfile(os.path.join(top, "analysis", "__init__.py")):
        return

    from importlib.util import spec_from_file_location

    class SourceTreeFinder:
        @staticmethod
        def find_spec(fullname, path=None, target=None):
            parent, _, name = fullname.rpartition(".")
            if parent != __name__ or name not in _SOURCE_TREE_SUBPACKAGES:
                return None
            folder = os.path.join(top, name)
            return spec_from_file_location(fullname, os.path.join(folder, "__init__.py"),
                                           submodule_search_locations=[folder])

    # First, not last: an editable install of another checkout (its finder is already
    # on sys.meta_path) would otherwise supply analysis/ from there while zaptrace/
    # comes from this checkout (PYTHONPATH=<checkout> with another checkout's venv).
    sys.meta_path.insert(0, SourceTreeFinder)


_map_source_tree_subpackages()
