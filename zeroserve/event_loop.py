"""Which asyncio event loop the gateway runs on: ``gateway.event_loop``.

The gateway's loop does little per callback and many callbacks per request (tornado's
reads and writes, the broker link's ZeroMQ descriptor, futures, timers). uvloop runs the
loop itself (ready callbacks, timers, the selector) in C, which takes 6-9% off the gateway's
CPU per request (docs/benchmarks.md, round 2). "asyncio" (the default) is asyncio's own
loop; "uvloop" chooses uvloop (``pip install 'zeroserve[uvloop]'``), and "auto" uvloop where
it is installed. The default stays asyncio's loop until one difference is understood: on
uvloop, in two of three whole test runs, a client that left a stream between two chunks was
noticed only at the next chunk's write (tests/integration/test_stream_rest.py).

Workers stay on asyncio's loop: uvloop's ``add_reader`` leaves a job child's pipe
non-blocking, and a large job result then fails to arrive whole.
"""
from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

CHOICES = ("auto", "uvloop", "asyncio")


class LoopUnavailable(RuntimeError):
    """The setting names a loop that cannot run here (unknown, or uvloop not installed)."""


def chosen_loop(choice: str, uvloop_installed: bool) -> str:
    """The loop ``choice`` runs on, "uvloop" or "asyncio"; LoopUnavailable for a choice
    outside :data:`CHOICES`, or "uvloop" where it is not installed."""
    if choice not in CHOICES:
        raise LoopUnavailable(f"gateway.event_loop must be one of {', '.join(CHOICES)}, "
                              f"got {choice!r}")
    if choice == "uvloop" and not uvloop_installed:
        raise LoopUnavailable("gateway.event_loop is 'uvloop' but uvloop is not installed "
                              "(pip install uvloop); set it to 'auto' or 'asyncio'")
    if choice == "asyncio" or not uvloop_installed:
        return "asyncio"
    return "uvloop"


def uvloop_installed() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def running_loop() -> str:
    """The kind of the running loop, "uvloop" or "asyncio" (for start-up lines)."""
    module = type(asyncio.get_running_loop()).__module__
    return "uvloop" if module.startswith("uvloop") else "asyncio"


def run(main: Coroutine[Any, Any, T], loop: str) -> T:
    """Run ``main`` to completion on a new loop of kind ``loop`` (see :func:`chosen_loop`)."""
    if loop == "uvloop":
        import uvloop
        return uvloop.run(main)
    return asyncio.run(main)
