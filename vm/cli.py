"""``zaptrace vm``: build, run and inspect the QEMU guests (a typer sub-app).

Written for typer 0.7 (Debian bookworm) as well as current releases: options
use the ``param: type = typer.Option(default, "--name", ...)`` style.
"""

from typing import Dict, List, Optional

import typer

from zaptrace.errors import clean_errors

from . import build as vm_build
from . import kbuild, qemu, runner
from .errors import VMError
from .labels import DEFAULT_KERNELS, LABELS, SOURCE_LABELS, listed, with_suites

app = typer.Typer(
    help="QEMU guests booting Debian kernels, for real kprobe recordings.",
    no_args_is_help=True,
    add_completion=False,
)


kernel_app = typer.Typer(
    help="Guest kernels built from source (Debian's linux-source packages or your own tree), with patches.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(kernel_app, name="kernel")

# The kernel lists in the help texts are formatted from the table in vm/labels.py.
KERNEL_BUILD_HELP = """Build a guest kernel from source, with patches; cached and incremental.

\b
SOURCE is a kernel label whose Debian suite serves linux-source-<label>
(%s),
downloaded and unpacked once into the cache, or the path of your own kernel
tree (never written to: built with make O=<cache>).  The config is `make
defconfig kvm_guest.config` plus the repository's fragment vm/guest.config
(and --config FILE); a fragment line that does not hold after olddefconfig
is an error.  Patches are applied in order to the unpacked package (only
there); another patch set of the same source reverts them first, and make
rebuilds only what changed.  The kernel is everything built in, with its own
headers (CONFIG_IKHEADERS), and boots by name: `zaptrace vm run --kernel
NAME`.  Its release is <version>-zt<key>.

\b
Examples:
  zaptrace vm kernel build 7.2                                # 7.2-src: about 26 min on 2 cores, first time
  zaptrace vm kernel build 7.2 --patch patches/7.2/pmd-flush.patch   # 7.2-src+pmd-flush: about 3 min
  zaptrace vm kernel build ~/src/linux --name mine            # your tree, built with make O=<cache>
  zaptrace vm run --kernel 7.2-src+pmd-flush -- zaptrace doctor
  zaptrace ab 7.2-src 7.2-src+pmd-flush --rounds 3 -- zaptrace workload run race --mapping pmd
""" % with_suites(SOURCE_LABELS)


@kernel_app.command("build", help=KERNEL_BUILD_HELP)
@clean_errors
def kernel_build_cmd(
    source: str = typer.Argument(..., help="A label (%s: Debian's linux-source) or a kernel tree's path."
                                    % listed(SOURCE_LABELS)),
    patch: Optional[List[str]] = typer.Option(None, "--patch", "-p", help="A patch to apply (repeatable, in order)."),
    name: Optional[str] = typer.Option(None, "--name", "-n",
                                       help="Name to boot it by (default: <label>-src[+<patch>...], tree-<dir>)."),
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", help="make -j (default: the host's CPUs)."),
    config: Optional[List[str]] = typer.Option(None, "--config", help="A further config fragment (repeatable)."),
    force: bool = typer.Option(False, "--force", "-f", help="Run make even when this build is cached."),
) -> None:
    kbuild.build(source, list(patch or []), name=name, jobs=jobs, fragments=list(config or []), force=force,
                 log=typer.echo)


@kernel_app.command("list")
@clean_errors
def kernel_list_cmd() -> None:
    """List the kernels built from source: name, release, source, patches, build time."""
    lines = kbuild.describe()
    for line in lines or ["no kernel built yet: zaptrace vm kernel build %s" % SOURCE_LABELS[-1]]:
        typer.echo(line)


@app.command("build")
@clean_errors
def build_cmd(
    kernel: List[str] = typer.Option(
        list(DEFAULT_KERNELS), "--kernel", "-k",
        help="Kernel to fetch (%s); repeat for several. Default: %s." % (listed(LABELS), listed(DEFAULT_KERNELS)),
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
                               help="%s (Debian's), a name from `vm kernel list`, a kernel build tree, or the "
                                    "path of a bzImage (or .../lib/modules/R/vmlinuz)." % listed(LABELS)),
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
