"""The ``zeroserve`` command: broker, gateway, worker, and serve (all of them on this host).

Each command only parses options into :class:`zeroserve.config.Settings`, puts
them in a :class:`zeroserve.container.Container` and calls the daemon's ``run``
with it; ``python -m broker|gateway|worker`` use the same commands. The flags
are spelled alike on every command (:mod:`zeroserve.cli.options`).
"""
from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any

import click

from zeroserve.cli.options import (
    backend_option,
    common_options,
    config_option,
    frontend_option,
    grpc_port_option,
    http_port_option,
    metrics_port_option,
    option,
    tls_options,
)
from zeroserve.config import ConfigError, Settings, load_settings
from zeroserve.container import Container

if TYPE_CHECKING:
    from zeroserve.deployment import Deployment


def _parts(config_file: str | None, options: dict[str, Any], daemon: bool = True) -> Container:
    """The container of this command: the invoking context's (tests pass one as ``obj``) or a
    new one, holding the settings layered from ``config_file``, the environment and
    ``options`` (flag destinations, ``section__key``). A ``daemon`` logs to stderr, from
    before the settings are read (so that their deprecation warnings have the log's form)."""
    if daemon:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                            format="%(asctime)s %(levelname)-7s %(message)s")
    settings = _load(config_file, options)
    if daemon:
        logging.getLogger().setLevel(settings.log.level.upper())
    ctx = click.get_current_context(silent=True)
    parts = ctx.find_object(Container) if ctx is not None else None
    if parts is None:
        parts = Container()
    parts.settings.set(settings)
    return parts


def _load(config_file: str | None, options: dict[str, Any]) -> Settings:
    dotted = {name.replace("__", "."): value for name, value in options.items()}
    try:
        return load_settings(config_file, dotted)
    except (ConfigError, OSError) as exc:
        raise click.UsageError(str(exc)) from None


@click.command("broker")
@option("--frontend", "broker__frontend",
        help="Address to bind for gateways [default: tcp://127.0.0.1:5555]; use "
             "tcp://0.0.0.0:5555 to accept gateways from other hosts.")
@option("--backend", "broker__backend",
        help="Address to bind for workers [default: tcp://127.0.0.1:5556].")
@metrics_port_option
@option("--max-queue", "broker__max_queue", type=int,
        help="Requests waiting per endpoint before new ones get 503 [default: 1000].")
@option("--job-store", "jobs__store_path",
        help="SQLite file of the durable job store "
             "[default: $XDG_STATE_HOME/zeroserve/jobs-<frontend port>.sqlite3].")
@common_options
def broker_command(config_file: str | None, **options: Any) -> None:
    """Run the broker: routes requests from gateways to workers, with queues and batching."""
    import broker

    sys.exit(broker.run(_parts(config_file, options)))


@click.command("gateway")
@frontend_option("gateway__frontend",
                 "The broker's frontend address [default: tcp://127.0.0.1:5555].")
@http_port_option
@grpc_port_option
@click.option("--reuse-port/--no-reuse-port", "gateway__reuse_port", default=None,
              help="Share the HTTP and gRPC ports with other gateways of this cluster on "
                   "this host (SO_REUSEPORT; a port held by another cluster's gateway is "
                   "refused) [default: no: a taken port is a start-up error].")
@option("--host", "gateway__http_host", help="HTTP and gRPC bind address [default: 0.0.0.0].")
@tls_options
@option("--timeout", "request__default_timeout_s", type=float,
        help="Deadline of a request that names none, in seconds [default: 30].")
@common_options
def gateway_command(config_file: str | None, **options: Any) -> None:
    """Run a gateway: serves HTTP and gRPC and forwards each call to the broker."""
    import gateway

    sys.exit(gateway.run(_parts(config_file, options)))


@click.command("worker")
@click.argument("service")
@backend_option("worker__backend", "The broker's backend address [default: tcp://127.0.0.1:5556].")
@option("--frontend", "worker__frontend",
        help="The broker's frontend address, for calls of other services (zeroserve.depends) "
             "[default: tcp://127.0.0.1:5555].")
@option("--slots", "worker__slots", type=int,
        help="Batches this worker holds at once, running or queued [default: 2].")
@option("--threads", "worker__threads", type=int,
        help="Sync endpoint calls run at once; raise it only for thread-safe models "
             "[default: 1].")
@option("--job-slots", "worker__job_slots", type=int,
        help="Jobs (@zeroserve.task) run at once, each in a child process; 0: none "
             "[default: 1].")
@click.option("--service-version", type=click.IntRange(min=1), default=None,
              help="The version of SERVICE this worker serves, instead of the one its class "
                   "declares [default: @zeroserve.service(version=...), 1].")
@common_options
def worker_command(service: str, config_file: str | None, service_version: int | None,
                   **options: Any) -> None:
    """Run a worker for SERVICE (path/file.py[:Class] or package.module:Class; a file that
    defines one service may be named alone)."""
    import dataclasses

    import worker
    from zeroserve.service import load_service

    parts = _parts(config_file, options)
    try:
        spec = load_service(service)
    except (ValueError, TypeError, ImportError, AttributeError, OSError) as exc:
        raise click.UsageError(f"cannot load service {service}: {exc}") from None
    if service_version is not None:
        spec = dataclasses.replace(spec, version=service_version)
    sys.exit(worker.run(spec, parts))


@click.command("serve")
@click.argument("targets", nargs=-1, required=True, metavar="SERVICE... | DEPLOYMENT.yaml")
@click.option("--workers", type=int, default=None,
              help="Worker processes per service [default: 2]; a deployment file gives its "
                   "own per service.")
@click.option("--gpus", "gpu_list", metavar="0,1,...",
              help="The GPUs that services asking for `gpus` may use [default: those "
                   "`nvidia-smi -L` lists].")
@http_port_option
@grpc_port_option
@metrics_port_option
@option("--host", "gateway__http_host", help="HTTP bind address [default: 0.0.0.0].")
@tls_options
@option("--frontend", "broker__frontend",
        help="Broker frontend address [default: tcp://127.0.0.1:5555].")
@option("--backend", "broker__backend",
        help="Broker backend address [default: tcp://127.0.0.1:5556].")
@option("--slots", "worker__slots", type=int, help="Slots per worker [default: 2].")
@option("--threads", "worker__threads", type=int,
        help="Threads per worker for sync endpoints [default: 1].")
@option("--job-slots", "worker__job_slots", type=int,
        help="Job slots per worker (child processes) [default: 1].")
@option("--job-store", "jobs__store_path",
        help="The broker's SQLite job store [default: under $XDG_STATE_HOME/zeroserve].")
@common_options
def serve_command(targets: tuple[str, ...], workers: int | None, gpu_list: str | None,
                  config_file: str | None, **options: Any) -> None:
    """Serve one or more SERVICEs (path/file.py[:Class] or module:Class), or the services of
    a DEPLOYMENT.yaml file (docs/deployment.md), on this host: a broker, a gateway and each
    service's workers, each a process.

    The deployment file is checked whole before anything starts; flags apply to every
    service, and a service's own settings in the file win over them."""
    from gateway.tls import TlsError, load_tls
    from zeroserve.cli.embedded import serve
    from zeroserve.cli.gpus import GpuShortage, detect_devices, parse_devices
    from zeroserve.cli.serve_plan import named, plan_gpus, wants_gpus
    from zeroserve.cli.targets import TargetError, load_targets

    deployment = _deployment(targets, workers)
    try:
        deployment = named(deployment, load_targets([s.target for s in deployment.services]))
    except (TargetError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    flags = {name: value for name, value in options.items() if value is not None}
    from_file = _load(config_file, flags).batching.overrides
    layered = {**{k.replace(".", "__"): v
                  for k, v in deployment.overrides(from_file).items()}, **flags}
    parts = _parts(config_file, layered)
    try:
        load_tls(parts.gateway.get())  # the gateway checks again; stop here before any start
    except TlsError as exc:
        raise click.UsageError(str(exc)) from None
    gpus = None
    if wants_gpus(deployment):
        try:
            devices = parse_devices(gpu_list) if gpu_list else detect_devices()
            gpus = plan_gpus(deployment, devices)
        except (GpuShortage, ValueError) as exc:
            raise click.UsageError(str(exc)) from None
    sys.exit(serve(deployment, parts.settings.get(), config_file, layered, gpus))


def _deployment(targets: tuple[str, ...], workers: int | None) -> Deployment:
    """The deployment that ``serve`` was given: a checked deployment file, or the services
    named on the command line with ``workers`` each."""
    from zeroserve.cli.serve_plan import command_line_deployment
    from zeroserve.deployment import DeploymentError, is_deployment_file, load_deployment

    files = [t for t in targets if is_deployment_file(t)]
    if not files:
        if workers is not None and workers < 0:
            raise click.UsageError(f"--workers must be 0 or more, not {workers}")
        return command_line_deployment(targets, 2 if workers is None else workers)
    if len(targets) > 1:
        raise click.UsageError("give one deployment file, or services, not both: "
                               f"{' '.join(targets)}")
    if workers is not None:
        raise click.UsageError("--workers does not apply to a deployment file: set `workers` "
                               "per service in it")
    try:
        return load_deployment(files[0])
    except DeploymentError as exc:
        raise click.UsageError(str(exc)) from None
    except OSError as exc:
        raise click.UsageError(f"cannot read the deployment file: {exc}") from None


@click.command("status")
@frontend_option("gateway__frontend",
                 "The broker's frontend address [default: gateway.frontend, "
                 "tcp://127.0.0.1:5555].")
@config_option
@click.option("--watch/--once", default=None,
              help="Refresh every second until Ctrl-C, or print once [default: --watch on a "
                   "terminal, --once otherwise].")
@click.option("--json", "as_json", is_flag=True, help="Print the raw statistics as JSON, once.")
def status_command(config_file: str | None, watch: bool | None, as_json: bool,
                   **options: Any) -> None:
    """Show the broker's workers, queues, requests/s, batch sizes and fitted latency model.

    With CURVE on, give the same curve settings as for a gateway (--config or ZEROSERVE_CURVE_*).
    """
    import json

    from zeroserve.cli.admin import broker_stats
    from zeroserve.cli.status import render, request_rates
    from zeroserve.curve import CurveError, from_settings

    parts = _parts(config_file, options, daemon=False)
    address = parts.gateway.get().frontend
    clock, sleep = parts.clock.get(), parts.sleep.get()
    try:
        keys = from_settings(parts.curve.get(), "client")
    except CurveError as exc:
        raise click.UsageError(str(exc)) from None
    live = sys.stdout.isatty() if watch is None else watch
    previous: tuple[float, dict] | None = None
    while True:
        try:
            stats = broker_stats(address, curve=keys)
        except TimeoutError as exc:
            raise click.ClickException(str(exc)) from None
        if as_json:
            click.echo(json.dumps(stats, indent=2))
            return
        now = clock()
        rates = request_rates(previous[1], stats, now - previous[0]) if previous else None
        previous = (now, stats)
        click.echo(("\x1b[2J\x1b[H" if live else "") + render(stats, rates))
        if not live:
            return
        sleep(1.0)


@click.command("traffic")
@click.argument("service")
@click.argument("weights", nargs=-1, metavar="VERSION=PERCENT...")
@click.option("--clear", is_flag=True, help="Remove the split: version-less calls go to the "
                                            "latest version again.")
@frontend_option("gateway__frontend",
                 "The broker's frontend address [default: gateway.frontend, "
                 "tcp://127.0.0.1:5555].")
@config_option
def traffic_command(service: str, weights: tuple[str, ...], clear: bool,
                    config_file: str | None, **options: Any) -> None:
    """Split SERVICE's version-less calls over its versions, e.g. ``zeroserve traffic mlp
    1=90 2=10`` (percents summing to 100, versions that workers serve), or ``--clear`` it.

    The split is a cluster setting the broker holds and logs; every gateway takes it with
    the models it refreshes (gateway.schema_refresh_s) and chooses each call's version by it,
    before checking the call's inputs against that version's schema. Calls that name a
    version are not split.
    """
    from zeroserve.cli.admin import control
    from zeroserve.cli.traffic import answer_line, parse_weights
    from zeroserve.curve import CurveError, from_settings
    from zeroserve.traffic import TrafficError
    from zeroserve.wire.frontend import ControlOp

    if clear == bool(weights):
        raise click.UsageError("give VERSION=PERCENT pairs, or --clear")
    try:
        split = {} if clear else parse_weights(weights)
    except TrafficError as exc:
        raise click.UsageError(str(exc)) from None
    parts = _parts(config_file, options, daemon=False)
    try:
        keys = from_settings(parts.curve.get(), "client")
    except CurveError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        answer = control(parts.gateway.get().frontend, ControlOp.SET_TRAFFIC, {
            "service": service, "weights": {str(v): p for v, p in split.items()}}, curve=keys)
        click.echo(answer_line(answer))
    except (TimeoutError, TrafficError) as exc:
        raise click.ClickException(str(exc)) from None


@click.group("keys")
def keys_group() -> None:
    """Make keys: CURVE keys between the daemons, API keys for the gateways' callers."""


@keys_group.command("generate")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--name", "names", multiple=True,
              help="A key pair to make (repeat it) [default: broker, gateway, worker].")
def keys_generate_command(directory: str, names: tuple[str, ...]) -> None:
    """Make CURVE key pairs in DIRECTORY for the broker and its peers.

    Every public key but the broker's also goes into DIRECTORY/allowed/ROLE, in the broker's
    curve.allowed_keys_dir: a peer whose key is not there cannot join. The role comes from the
    name: gateway..., worker..., or operator for any other name (zeroserve status).
    """
    from pathlib import Path

    from zeroserve.curve import generate

    folder = Path(directory)
    chosen = list(names) or ["broker", "gateway", "worker"]
    for path in generate(folder, chosen):
        click.echo(f"wrote {path}")
    client = next((n for n in chosen if n != "broker"), "worker")
    click.echo("\n# broker:")
    click.echo(f"curve: {{enabled: true, secret_key_file: {folder / 'broker.key_secret'}, "
               f"allowed_keys_dir: {folder / 'allowed'}}}")
    click.echo("# a gateway or worker (its own pair, and the broker's public key):")
    click.echo(f"curve: {{enabled: true, secret_key_file: {folder / (client + '.key_secret')}, "
               f"broker_key_file: {folder / 'broker.key'}}}")


@keys_group.command("api")
@click.option("--name", default="client", show_default=True,
              help="A name for the key, shown in the gateway's messages.")
@click.option("--service", "services", multiple=True,
              help="A service the key may use (repeat it); none: every service.")
def keys_api_command(name: str, services: tuple[str, ...]) -> None:
    """Print a new API key, and the entry that lets a gateway accept it.

    Give the key to the client (``Authorization: Bearer <key>``) and add the
    entry to the file named by ``gateway.api_keys_file``; the file holds only the
    key's SHA-256.
    """
    import yaml

    from gateway.api_keys import digest, new_key

    key = new_key()
    entry = {"name": name, "sha256": digest(key), "services": list(services) or ["*"]}
    click.echo(f"key: {key}")
    click.echo()
    click.echo("# add to the keys file (gateway.api_keys_file):")
    click.echo(yaml.safe_dump({"keys": [entry]}, sort_keys=False).rstrip())


@click.group()
@click.version_option(package_name="zeroserve")
def main() -> None:
    """zeroserve: serve models from a cluster of processes joined by ZeroMQ."""


for _command in (broker_command, gateway_command, worker_command, serve_command,
                 status_command, traffic_command, keys_group):
    main.add_command(_command)
