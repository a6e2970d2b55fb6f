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
