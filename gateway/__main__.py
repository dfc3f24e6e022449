"""``python -m gateway``: the same as ``zeroserve gateway``."""
from zeroserve.cli.main import gateway_command

gateway_command(prog_name="python -m gateway")
