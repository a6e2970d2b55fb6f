"""Progress lines for long work (a guest build, a kernel build), stamped with the seconds since it started."""

import contextlib
import time
from typing import Callable, Iterator


class Progress:
    """Progress lines stamped with the seconds since the build started."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self._log = log
        self._t0 = time.monotonic()
        self.worked = False

    def elapsed(self) -> float:
        return time.monotonic() - self._t0

    def say(self, message: str) -> None:
        self._log("[%6.1fs] %s" % (self.elapsed(), message))

    @contextlib.contextmanager
    def step(self, what: str) -> Iterator[None]:
        self.worked = True
        self.say(what + " ...")
        started = time.monotonic()
        yield
        self.say("%s: done in %.1f s" % (what, time.monotonic() - started))
