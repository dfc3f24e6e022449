"""What a child process of a zeroserve daemon asks of the kernel."""
from __future__ import annotations

import ctypes
import signal

_PR_SET_PDEATHSIG = 1


def signal_on_parent_death(sig: signal.Signals) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent dies (Linux only;
    elsewhere nothing happens). Safe to call in a child before exec."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, sig)
    except OSError:
        pass


class StopSignals:
    """SIGTERM and SIGINT handlers (installed when made) that only note the request:
    ``received`` turns True, and the caller's loop stops at its next turn. Setting
    ``received`` itself stops it the same way."""

    def __init__(self) -> None:
        self.received = False
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._note)

    def _note(self, signum: int, _frame: object) -> None:
        self.received = True
