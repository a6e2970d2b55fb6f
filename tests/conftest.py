"""Shared fixtures.

Guest tests (anything using the ``guest_kernel`` fixture, marked ``guest``)
need the QEMU guest from ``zaptrace vm build``.  They never skip: when the
guest is not ready they fail, with the reason, so a broken recorder cannot
hide behind a skip (CI sets CI=true and builds the guest first).  Run only
the host tests with ``pytest -m 'not guest'``.
"""
import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


pytest_plugins = ["pytester"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI a skip is a failure, whatever raised it (see tests/needs.py)."""
    outcome = yield
    rep = outcome.get_result()
    from tests.needs import under_ci
    if rep.skipped and under_ci() and not hasattr(rep, "wasxfail"):
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        rep.outcome = "failed"
        rep.longrepr = "skipped under CI, which counts as a failure: %s" % reason


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "guest_kernel" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.guest)


@pytest.fixture
def guest_kernel(request):
    """The guest kernel label ("6.1" unless parametrized indirectly)."""
    kernel = getattr(request, "param", "6.1")
    from zaptrace.vm.build import ready
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
# the busiest step: on 6.12 (ext4 without large folios) 1,024 PTE-mapped pages, about 90,000
# events/s; the default 16 MiB ring holds 2.5 s of them, and a few seconds of host contention
# overflowed it (CI on 2026-11-27: 69,490 of 821,864 lost), so 64 MiB
step pmd      zaptrace record -q --buffer-pages 16384 -o pmd.zt -- sh -c 'zaptrace workload run race --mapping pmd --pages 1024 --iterations 200 && zaptrace workload run munmap-anon --mapping pmd --pages 1024 --iterations 20'
step lostwrite zaptrace record -q -o lostwrite.zt -- zaptrace workload run lostwrite --pages 256 --duration 30 --findings lostwrite.json
step binary   zaptrace record -q -o binary.zt -- sh -c 'head -c 4000000 /dev/urandom > $ZAPTRACE_SCRATCH/f; cat $ZAPTRACE_SCRATCH/f > /dev/null; exit 3'
step doctor   zaptrace doctor
# --zap-return: checked (the inference of each zap's return counted against its probe), inferred
step zapcheck zaptrace record -q --zap-return checked -o zapcheck.zt -- zaptrace workload run race --pages 256 --iterations 100
step zapinfer zaptrace record -q --zap-return inferred -o zapinfer.zt -- zaptrace workload run race --pages 256 --iterations 100
# --zap-entry inferred: the bracket opened at the zap's first PTE table, checked and inferred
step lazycheck zaptrace record -q --zap-entry inferred --zap-return checked -o lazycheck.zt -- zaptrace workload run race --pages 256 --iterations 100
step lazyinfer zaptrace record -q --zap-entry inferred --zap-return inferred -o lazyinfer.zt -- zaptrace workload run race --pages 256 --iterations 100
# A wheel built on the host (only where the fixture put one): unpacked as pip would install
# it, it records without the checkout, and `import analysis` fails beside it.
if [ -f zaptrace.whl ]; then
  step wheel sh -c 'rm -rf /tmp/whl && python3 -m zipfile -e zaptrace.whl /tmp/whl &&
    if PYTHONPATH=/tmp/whl python3 -P -c "import analysis" 2>/dev/null; then echo "import analysis works"; exit 9; fi &&
    cd /tmp && PYTHONPATH=/tmp/whl python3 -P -c "import zaptrace; print(zaptrace.__file__)" &&
    PYTHONPATH=/tmp/whl python3 -P -m zaptrace record -q -o $OLDPWD/wheel.zt -- \
      python3 -P -m zaptrace workload run munmap-anon --pages 64 --iterations 10'
fi
zaptrace record --ebpf > ebpf.c 2> ebpf.out
uname -r > uname.txt
exit 0
"""

_guest_cache = {}
#: Kernels whose guest also records with a wheel built from the tree (tests/test_packaging.py).
WHEEL_KERNELS = ("7.2",)


@pytest.fixture(scope="session")
def guest_traces(tmp_path_factory):
    """guest_traces(kernel) -> directory holding that kernel's recordings (one boot per kernel)."""
    def record(kernel: str) -> Path:
        if kernel not in _guest_cache:
            from zaptrace.vm.build import ready
            from zaptrace.vm.runner import run
            why = ready(kernel)
            if why:
                pytest.fail(f"guest for kernel {kernel} is not ready: {why}")
            d = tmp_path_factory.mktemp("guest-" + kernel.replace(".", "_"))
            (d / "record.sh").write_text(GUEST_RECORDINGS)
            if kernel in WHEEL_KERNELS:
                from tests.wheel import build_wheel
                w = tmp_path_factory.mktemp("wheel-" + kernel.replace(".", "_"))
                shutil.copy(build_wheel(w), d / "zaptrace.whl")
            with open(d / "vm.out", "wb") as out, open(d / "vm.err", "wb") as err:
                status = run(kernel, ["sh", "record.sh"], cwd=str(d), timeout=1800, stdout=out, stderr=err)
            assert status == 0, (d / "vm.err").read_text()[-3000:]
            _guest_cache[kernel] = d
        return _guest_cache[kernel]
    return record


# One 6.1 boot for the recorder's behaviour under interruption, faults and
# privileges; each case leaves NAME.status / NAME.out (and files) for the tests.
GUEST_BEHAVIOUR = r"""
S=$ZAPTRACE_SCRATCH
step() { name=$1; shift; "$@" > "$name.out" 2>&1; echo $? > "$name.status"; }
recording() { i=0; while [ $i -lt 3000 ]; do grep -q "zaptrace: recording" "$1" 2>/dev/null && return 0; sleep 0.1; i=$((i+1)); done; return 1; }
workload_alive() { if pgrep -f "workload run $1" > /dev/null; then echo alive; else echo gone; fi; }
bg_record() { name=$1; shift; zaptrace record -o "$name.zt" "$@" > "$name.out" 2>&1 & echo $! > "$name.pid"; recording "$name.out"; }

# Ctrl-C and SIGTERM: valid trace, workload ended, 130 / 143
for sig in INT TERM; do
  bg_record sig$sig -- zaptrace workload run race --duration 120
  sleep 2; R=$(cat sig$sig.pid); kill -$sig $R; wait $R; echo $? > sig$sig.status
  sleep 0.5; workload_alive race > sig$sig.workload
done

# SIGKILL of the recorder mid-run: the file loads up to its last chunk
bg_record kill9 -- zaptrace workload run race --duration 120
sleep 3; kill -KILL $(cat kill9.pid); wait $(cat kill9.pid); echo $? > kill9.status
pkill -f "workload run race"; sleep 0.5

# the workload crashes / is killed: its status comes back
step abort zaptrace record -o abort.zt -- python3 -c "import os; os.abort()"
step killed zaptrace record -o killed.zt -- sh -c 'kill -KILL $$'
# it forks and exits before its children
step orphan zaptrace record -o orphan.zt -- sh -c '(sleep 3; true) & exit 5'

# under sudo: the workload runs as the invoking user, the trace is theirs
step sudo env SUDO_UID=1000 SUDO_GID=1000 SUDO_USER=zt zaptrace record -o $S/sudo.zt -- sh -c 'id -u > $ZAPTRACE_SCRATCH/uid.txt'
stat -c %u $S/sudo.zt > sudo.owner; cp $S/uid.txt sudo.uid

# -p PID and -a -d
zaptrace workload run munmap-anon --duration 900 > /dev/null 2>&1 & W=$!
step follow zaptrace record -o follow.zt -p $W -d 4
step all zaptrace record -o all.zt -a -d 4
kill $W; wait $W

# forced loss: a one-page ring buffer; delivered + lost = generated
step loss zaptrace record --buffer-pages 1 -o loss.zt -- zaptrace workload run dontneed-shared --pages 1024 --iterations 20

# the perf buffer (kernels before 5.8 have no BPF ring buffer)
step perfbuf zaptrace record --perf-buffer -o perfbuf.zt -- zaptrace workload run dontneed-shared --pages 256 --iterations 20

# --summary agrees with the events of the same run
step summary zaptrace record --summary --keep-events -o summary.zt -- zaptrace workload run race --pages 256 --iterations 200

# disk full during recording (a 2 MiB tmpfs)
mkdir -p /mnt/tiny && mount -t tmpfs -o size=2m tmpfs /mnt/tiny
step full zaptrace record -o /mnt/tiny/full.zt -- zaptrace workload run dontneed-shared --pages 256 --iterations 200
cp /mnt/tiny/full.zt full.zt

# environment faults, each a one-line error before anything is attached
step unwritable zaptrace record -o /nonexistent/dir/t.zt -- true
step notroot runuser -u zt -- zaptrace record -o /tmp/nr.zt -- true
B=/lib/modules/$(uname -r)/build; mv $B $B.hidden
step noheaders zaptrace record -o noheaders.zt -- true
mv $B.hidden $B
mv /usr/lib/python3/dist-packages/bcc /usr/lib/python3/dist-packages/bcc.hidden
step nobcc zaptrace record -o nobcc.zt -- true
step nobcc_doctor zaptrace doctor
mv /usr/lib/python3/dist-packages/bcc.hidden /usr/lib/python3/dist-packages/bcc
exit 0
"""


@pytest.fixture(scope="session")
def guest_behaviour(tmp_path_factory):
    """Directory with the results of GUEST_BEHAVIOUR, run in one 6.1 boot."""
    from zaptrace.vm.build import ready
    from zaptrace.vm.runner import run
    why = ready("6.1")
    if why:
        pytest.fail(f"guest for kernel 6.1 is not ready: {why}")
    if "behaviour" not in _guest_cache:
        d = tmp_path_factory.mktemp("guest-behaviour")
        (d / "behaviour.sh").write_text(GUEST_BEHAVIOUR)
        with open(d / "vm.out", "wb") as out, open(d / "vm.err", "wb") as err:
            status = run("6.1", ["sh", "behaviour.sh"], cwd=str(d), timeout=2700, stdout=out, stderr=err)
        assert status == 0, (d / "vm.err").read_text()[-3000:]
        _guest_cache["behaviour"] = d
    return _guest_cache["behaviour"]
