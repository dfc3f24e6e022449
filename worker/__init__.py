"""The worker daemon: loads one service, runs the batches the broker sends it."""


def run(spec, parts):  # noqa: ANN001
    """Run the worker daemon for ``spec`` from its container (see worker.daemon.run)."""
    from worker.daemon import run as run_daemon

    return run_daemon(spec, parts)
