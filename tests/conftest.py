"""Shared fixtures.

Guest tests (anything using the ``guest_kernel`` fixture, marked ``guest``)
need the QEMU guest from ``zaptrace vm build``.  They never skip: when the
guest is not ready they fail, with the reason, so a broken recorder cannot
hide behind a skip (CI sets CI=true and builds the guest first).  Run only
the host tests with ``pytest -m 'not guest'``.
"""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "guest_kernel" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.guest)


@pytest.fixture
def guest_kernel(request):
    """The guest kernel label ("6.1" unless parametrized indirectly)."""
    kernel = getattr(request, "param", "6.1")
    from vm.build import ready
    why = ready(kernel)
    if why:
        ci = " (CI is set)" if os.environ.get("CI") else ""
        pytest.fail(f"guest for kernel {kernel} is not ready{ci}: {why}; "
                    "build it with `zaptrace vm build`, or deselect guest tests with -m 'not guest'")
    return kernel


# ------------------------------------------------------------ guest traces --
# One boot per kernel records every workload the tests look at; tests then
# analyse the files on the host.  Statuses of each step are kept, not raised,
# so that one broken step fails its own tests with its own log.

GUEST_RECORDINGS = r"""
step() { name=$1; shift; "$@" > "$name.out" 2>&1; echo $? > "$name.status"; }
step dontneed zaptrace record -q -o dontneed.zt -- zaptrace workload run dontneed-shared --pages 256 --iterations 40
step race     zaptrace record -q -o race.zt -- zaptrace workload run race --pages 256 --iterations 400
step anon     zaptrace record -q -o anon.zt -- zaptrace workload run munmap-anon --pages 256 --iterations 40
step binary   zaptrace record -q -o binary.zt -- sh -c 'head -c 4000000 /dev/urandom > $ZAPTRACE_SCRATCH/f; cat $ZAPTRACE_SCRATCH/f > /dev/null; exit 3'
step doctor   zaptrace doctor
zaptrace record --ebpf > ebpf.c 2> ebpf.out
uname -r > uname.txt
exit 0
"""

_guest_cache = {}


@pytest.fixture(scope="session")
def guest_traces(tmp_path_factory):
    """guest_traces(kernel) -> directory holding that kernel's recordings (one boot per kernel)."""
    def record(kernel: str) -> Path:
        if kernel not in _guest_cache:
            from vm.build import ready
            from vm.runner import run
            why = ready(kernel)
            if why:
                pytest.fail(f"guest for kernel {kernel} is not ready: {why}")
            d = tmp_path_factory.mktemp("guest-" + kernel.replace(".", "_"))
            (d / "record.sh").write_text(GUEST_RECORDINGS)
            with open(d / "vm.out", "wb") as out, open(d / "vm.err", "wb") as err:
                status = run(kernel, ["sh", "record.sh"], cwd=str(d), timeout=900, stdout=out, stderr=err)
            assert status == 0, (d / "vm.err").read_text()[-3000:]
            _guest_cache[kernel] = d
        return _guest_cache[kernel]
    return record
