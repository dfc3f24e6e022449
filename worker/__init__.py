"""The worker daemon: loads one service, runs the batches the broker sends it."""


def run(spec, settings):  # noqa: ANN001
    """Run the worker daemon for ``spec`` (see worker.daemon.run)."""
    from worker.daemon import run as run_daemon

    return run_daemon(spec, settings)
