"""``python -m zeroserve``: the same as the ``zeroserve`` command."""
from zeroserve.cli.main import main

main(prog_name="zeroserve")
