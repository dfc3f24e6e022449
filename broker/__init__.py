"""The broker daemon: routes requests between gateways and workers, batches, queues."""


def run(settings):  # noqa: ANN001
    """Run the broker daemon (see broker.daemon.run)."""
    from broker.daemon import run as run_daemon

    return run_daemon(settings)
