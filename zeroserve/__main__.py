"""``python -m zeroserve``: the same as the ``zeroserve`` command."""
from zeroserve.cli import main

main(prog_name="zeroserve")
