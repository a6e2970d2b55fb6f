"""``python -m vm build|run|status``: the ``zaptrace vm`` commands on their own."""

from vm.cli import app

app(prog_name="python -m vm")
