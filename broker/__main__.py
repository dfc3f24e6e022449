"""``python -m broker``: the same as ``zeroserve broker``."""
from zeroserve.cli.main import broker_command

broker_command(prog_name="python -m broker")
