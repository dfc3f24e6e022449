"""The gateway daemon: HTTP (and gRPC) front ends that turn calls into broker requests."""


def run(settings):  # noqa: ANN001
    """Run the gateway daemon (see gateway.daemon.run)."""
    from gateway.daemon import run as run_daemon

    return run_daemon(settings)
