"""The ``zeroserve`` command and the operator's tools (serve, status, keys)."""
