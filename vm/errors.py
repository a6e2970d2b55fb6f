"""The one exception type the vm package raises for expected failures."""

from zaptrace.errors import ZaptraceError


class VMError(ZaptraceError):
    """A one-line, user-facing failure; the CLI prints it and exits ``exit_code``."""

    exit_code = 2


class GuestTimeout(VMError):
    """The guest ran past the caller's timeout and was killed."""

    exit_code = 124


class BootError(VMError):
    """QEMU or the guest failed before the command reported an exit status."""

    exit_code = 125
