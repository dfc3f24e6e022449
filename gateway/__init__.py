"""The gateway daemon: HTTP (and gRPC) front ends that turn calls into broker requests."""


def run(parts):  # noqa: ANN001
    """Run the gateway daemon from its container (see gateway.daemon.run)."""
    from gateway.daemon import run as run_daemon

    return run_daemon(parts)
