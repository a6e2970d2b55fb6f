"""One error type, one way to print it, one exit-code policy for every command.

Every expected failure in the project (zaptrace, analysis, vm) raises a
subclass of ZaptraceError with a one-line message that says what to do; the
commands print it as ``zaptrace: error: MESSAGE`` and exit with the error's
``exit_code``.  Nothing here imports another module of the project, so any
module may import it (no import cycle through the CLI).

Exit statuses, the same for ``zaptrace``, ``zaptrace vm`` and the reports:

====  ==========================================================================
0     success
1     the command ran and its answer is "no": ``doctor`` found a problem, the
      ``lostwrite`` workload lost writes, stdout's reader went away
2     bad input or environment (one line on stderr; nothing recorded is lost)
N     ``record -- CMD`` and ``vm run -- CMD``: CMD's own exit status
70    internal error: the traceback is written to a file named on stderr
124   the guest ran past ``vm run --timeout``
125   the guest failed before the command reported a status
130   interrupted (Ctrl-C); 143: SIGTERM during ``record``
====  ==========================================================================
"""

import functools
import os
import sys

EXIT_NO = 1
EXIT_ERROR = 2
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130


class ZaptraceError(Exception):
    """A one-line, user-facing failure; commands print it and exit ``exit_code``."""

    exit_code = EXIT_ERROR


def err(msg: str) -> None:
    sys.stderr.write(f"zaptrace: error: {msg}\n")
    sys.stderr.flush()


def info(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def clean_errors(fn):
    """Decorator for a typer command: the policy above, as code."""
    import typer

    @functools.wraps(fn)
    def wrapper(*a, **kw):
        try:
            return fn(*a, **kw)
        except ZaptraceError as e:
            err(str(e))
            raise typer.Exit(e.exit_code)
        except BrokenPipeError as e:
            try:
                sys.stdout.flush()
            except BrokenPipeError:
                # stdout's reader went away (`zaptrace report | head`): nothing more to say
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                raise typer.Exit(EXIT_NO)
            err(f"broken pipe: {e}")
            raise typer.Exit(EXIT_ERROR)
        except KeyboardInterrupt:
            err("interrupted")
            raise typer.Exit(EXIT_INTERRUPTED)
    return wrapper
