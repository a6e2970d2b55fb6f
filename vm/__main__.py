"""``python -m zaptrace.vm build|run|status``: the ``zaptrace vm`` commands on their own."""

from .cli import app

app(prog_name="python -m zaptrace.vm")
