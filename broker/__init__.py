"""The broker daemon: routes requests between gateways and workers, batches, queues."""


def run(parts):  # noqa: ANN001
    """Run the broker daemon from its container (see broker.daemon.run)."""
    from broker.daemon import run as run_daemon

    return run_daemon(parts)
