"""``zaptrace vm``: build, run and inspect the QEMU guests (a typer sub-app).

Written for typer 0.7 (Debian bookworm) as well as current releases: options
use the ``param: type = typer.Option(default, "--name", ...)`` style.
"""

from typing import Dict, List, Optional

import typer

from zaptrace.errors import clean_errors

from . import build as vm_build
from . import qemu, runner
from .errors import VMError

app = typer.Typer(
    help="QEMU guests booting Debian kernels, for real kprobe recordings.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command("build")
@clean_errors
def build_cmd(
    kernel: List[str] = typer.Option(
        list(vm_build.DEFAULT_KERNELS), "--kernel", "-k",
        help="Kernel to fetch (5.10, 6.1, 6.12, 7.2, 7.3); repeat for several. Default: 5.10, 6.1, 6.12, 7.2.",
    ),
    force: bool = typer.Option(False, "--force", "-f", help="Fetch and rebuild even what is cached."),
) -> None:
    """Fetch Debian kernels and build the guest image (cached; re-running is instant)."""
    vm_build.build(kernel, force=force, log=typer.echo)


def _parse_env(pairs: List[str]) -> Dict[str, str]:
    env: Dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise VMError("--env expects NAME=VALUE, not %r" % pair)
        env[name] = value
    return env


@app.command(
    "run",
    context_settings={"allow_interspersed_args": False, "ignore_unknown_options": True},
)
@clean_errors
def run_cmd(
    command: List[str] = typer.Argument(..., metavar="[--] CMD [ARGS]...", help="The command to run in the guest."),
    kernel: str = typer.Option("6.1", "--kernel", "-k",
                               help="5.10, 6.1, 6.12, 7.2, 7.3, or the path of a bzImage (or .../lib/modules/R/vmlinuz)."),
    timeout: Optional[float] = typer.Option(None, "--timeout", "-t", help="Kill the guest after this many seconds (exit 124)."),
    accel: str = typer.Option("auto", "--accel", help="auto, kvm or tcg."),
    memory: int = typer.Option(2048, "--memory", "-m", help="Guest memory in MiB."),
    smp: Optional[int] = typer.Option(None, "--smp",
                                      help="Guest CPUs (default: multi-threaded TCG 3, at most the host's CPUs; single-threaded 2; see `vm status`)."),
    env: Optional[List[str]] = typer.Option(None, "--env", "-e", help="NAME=VALUE for the command's environment; repeatable."),
    modules: Optional[str] = typer.Option(None, "--modules", help="With a bzImage: its lib/modules/<release> directory."),
    headers: Optional[str] = typer.Option(None, "--headers", help="With a bzImage: its kernel build/headers tree (for BCC)."),
    scratch_fs: str = typer.Option("ext4", "--scratch-fs",
                                   help="Filesystem of $ZAPTRACE_SCRATCH: ext4 or xfs (large folios since 5.18)."),
) -> None:
    """Boot a guest, run CMD in the current directory as root, exit with CMD's status."""
    status = runner.run(
        kernel, list(command), timeout=timeout, accel=accel, memory_mb=memory, smp=smp,
        env=_parse_env(list(env or [])), modules=modules, headers=headers, scratch_fs=scratch_fs,
    )
    raise typer.Exit(status)


@app.command("status")
@clean_errors
def status_cmd() -> None:
    """Show what is built, which accelerator runs use, and the last run."""
    for line in vm_build.describe():
        typer.echo(line)
