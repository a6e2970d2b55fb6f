"""QEMU guests built from Debian packages, in which zaptrace records real kprobes.

``zaptrace.vm.build.build()`` fetches Debian kernels and builds a bookworm
userspace image; ``zaptrace.vm.runner.run()`` boots one of those kernels and
runs a command in it.  The command line front end is ``zaptrace.vm.cli.app``
(``zaptrace vm ...``).  The source tree keeps this package in the top-level
folder ``vm/``; it installs as ``zaptrace.vm`` (see pyproject.toml).
"""
