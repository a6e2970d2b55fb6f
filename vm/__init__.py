"""QEMU guests built from Debian packages, in which zaptrace records real kprobes.

``vm.build.build()`` fetches Debian kernels and builds a bookworm userspace
image; ``vm.runner.run()`` boots one of those kernels and runs a command in it.
The command line front end is ``vm.cli.app`` (``zaptrace vm ...``).
"""
