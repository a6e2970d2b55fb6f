"""Prerequisites of a test: skip without them locally, fail under CI.

CI sets CI=true and installs everything the suite needs; a prerequisite that
is missing there is a broken setup, and a skip would hide it (a skipped guest
test is a hidden broken recorder).  conftest.py also turns any other skip into
a failure when CI is set, so nothing can slip through by another route.
"""
import os

import pytest


def under_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def need(ok: bool, reason: str) -> None:
    """Go on if ``ok``; otherwise skip with ``reason``, or fail under CI."""
    if ok:
        return
    if under_ci():
        pytest.fail("%s (CI is set: a missing prerequisite fails, it does not skip)" % reason, pytrace=False)
    pytest.skip(reason)
