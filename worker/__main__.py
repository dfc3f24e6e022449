"""``python -m worker``: the same as ``zeroserve worker``."""
from zeroserve.cli.main import worker_command

worker_command(prog_name="python -m worker")
