"""``cluster supervise``: start a fleet's daemons again when they exit on their own.

The supervisor watches the run directory's pidfiles. A daemon whose process is
gone while its pidfile says it should run has crashed: it is started again,
under the same name, after the backoff of :class:`zeroserve.cli.restarts.
RestartPolicy`. A daemon stopped on purpose (``scale``, ``down``) is marked
stopped in the run directory first (:meth:`RunDir.mark_stopped`), so it is left
alone. When one daemon crashes five times within a minute the supervisor stops
supervising, says so, and exits 1: restarting will not mend it.
"""
from __future__ import annotations

import time
from collections.abc import Callable

from cluster_lib.fleet import Fleet
from cluster_lib.rundir import KINDS, is_daemon
from zeroserve.cli.restarts import RestartPolicy
from zeroserve.process import StopSignals

POLL_S = 0.2


def supervise(fleet: Fleet, say: Callable[[str], None] = print,
              policy: RestartPolicy | None = None) -> int:
    """Watch ``fleet`` until SIGTERM/SIGINT (0) or a daemon keeps crashing (1)."""
    policy = policy or RestartPolicy()
    stop = StopSignals()
    spec = fleet.spec()
    watched: dict[str, int] = {}     # name -> pid, as last seen
    restart_at: dict[str, float] = {}
    say(f"supervisor: watching the fleet in {fleet.run_dir}")
    while not stop.received:
        now = time.monotonic()
        for kind in KINDS:
            watched.update(fleet.dir.recorded(kind))
        for name, pid in list(watched.items()):
            if fleet.dir.stopped(name):
                watched.pop(name)
                restart_at.pop(name, None)
            elif name not in restart_at and not is_daemon(pid, name.split("-")[0]):
                when = policy.crashed(name, now)
                if when is None:
                    say(f"supervisor: {name} crashed {policy.crashes(name)} times within "
                        f"{policy.window_s:.0f}s; giving up")
                    return 1
                say(f"supervisor: {name} (pid {pid}) exited; starting it again in "
                    f"{when - now:.1f}s")
                restart_at[name] = when
        for name, when in list(restart_at.items()):
            if now >= when:
                del restart_at[name]
                _, pid = fleet.start_again(name, spec)
                watched[name] = pid
                say(f"supervisor: {name} started again (pid {pid})")
        time.sleep(POLL_S)
    say("supervisor: stopped")
    return 0
