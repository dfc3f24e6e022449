"""The options every command spells the same way, and the hidden aliases of old spellings.

One name for one thing on every command: ``--frontend`` / ``--backend`` for the
broker's addresses, ``--http-port`` / ``--grpc-port`` / ``--metrics-port`` for
ports, ``--tls-cert`` / ``--tls-key`` / ``--tls-client-ca`` for the gateway's
TLS, ``--config`` for the settings file. An option's destination is the
dotted setting it sets, with ``__`` for the dot (``gateway__http_port``).

A renamed flag keeps working for one release as a hidden alias that prints a
deprecation warning: :func:`renamed` makes it, :func:`option` makes the new
flag take the alias's value when it is not given itself (the new one wins when
both are).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

_ALIAS_KEY = "zeroserve.alias."


def _value_or_alias(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    # click processes the options given on the command line before the others, so an alias
    # that was given has been recorded by the time its option (not given) is processed
    if value is None and param.name is not None:
        return ctx.meta.get(_ALIAS_KEY + param.name)
    return value


def option(*names: str, **kwargs: Any) -> Callable[[Callable], Callable]:
    """``click.option`` for a flag that may have :func:`renamed` aliases (no default: the
    settings hold the defaults)."""
    return click.option(*names, callback=_value_or_alias, **kwargs)


def renamed(old: str, new: str, dest: str, **kwargs: Any) -> Callable[[Callable], Callable]:
    """A hidden flag ``old`` that sets what ``new`` (destination ``dest``) sets, with a
    deprecation warning on stderr when it is used."""
    def remember(ctx: click.Context, _param: click.Parameter, value: Any) -> None:
        if value is not None:
            click.echo(f"zeroserve: warning: {old} is deprecated and will be removed; "
                       f"use {new}", err=True)
            ctx.meta[_ALIAS_KEY + dest] = value

    return click.option(old, "_renamed_" + old.lstrip("-").replace("-", "_"), hidden=True,
                        expose_value=False, callback=remember, **kwargs)


def frontend_option(dest: str, help_text: str) -> Callable[[Callable], Callable]:
    """``--frontend ADDRESS`` (the broker's frontend), with the old ``--broker`` alias."""
    def add(func: Callable) -> Callable:
        func = renamed("--broker", "--frontend", dest)(func)
        return option("--frontend", dest, help=help_text)(func)
    return add


def backend_option(dest: str, help_text: str) -> Callable[[Callable], Callable]:
    """``--backend ADDRESS`` (the broker's backend), with the old ``--broker`` alias."""
    def add(func: Callable) -> Callable:
        func = renamed("--broker", "--backend", dest)(func)
        return option("--backend", dest, help=help_text)(func)
    return add


def http_port_option(func: Callable) -> Callable:
    """``--http-port`` (gateway.http_port), with the old ``--http`` alias."""
    func = renamed("--http", "--http-port", "gateway__http_port", type=int)(func)
    return option("--http-port", "gateway__http_port", type=int,
                  help="HTTP port [default: 8000].")(func)


def grpc_port_option(func: Callable) -> Callable:
    """``--grpc-port`` (gateway.grpc_port), with the old ``--grpc`` alias."""
    func = renamed("--grpc", "--grpc-port", "gateway__grpc_port", type=int)(func)
    return option("--grpc-port", "gateway__grpc_port", type=int,
                  help="gRPC (Open Inference Protocol) port; 0 turns gRPC off "
                       "[default: 8001].")(func)


def metrics_port_option(func: Callable) -> Callable:
    """``--metrics-port`` (broker.metrics_port)."""
    return option("--metrics-port", "broker__metrics_port", type=int,
                  help="Port of the broker's Prometheus /metrics; 0 turns it off "
                       "[default: 8002].")(func)


def tls_options(func: Callable) -> Callable:
    """``--tls-cert``, ``--tls-key`` and ``--tls-client-ca`` (gateway.tls_*): the gateway's
    HTTP and gRPC ports speak TLS, and with a client CA require client certificates."""
    for add in reversed([
        option("--tls-cert", "gateway__tls_cert_file", metavar="FILE",
               help="PEM certificate (chain) of the gateway: HTTP and gRPC speak TLS "
                    "(https://, grpcs://) [default: none, plain]."),
        option("--tls-key", "gateway__tls_key_file", metavar="FILE",
               help="PEM private key of --tls-cert."),
        option("--tls-client-ca", "gateway__tls_client_ca_file", metavar="FILE",
               help="PEM CA: every client must present a certificate it issued (mTLS) "
                    "[default: none, no client certificate asked]."),
    ]):
        func = add(func)
    return func


def config_option(func: Callable) -> Callable:
    """``--config FILE``: the YAML file of settings."""
    return click.option(
        "--config", "config_file", type=click.Path(exists=True, dir_okay=False),
        help="YAML file of settings (see docs/configuration.md); flags and ZEROSERVE_* "
             "variables override it.")(func)


_COMMON = [
    config_option,
    option("--heartbeat-interval", "heartbeat__interval_s", type=float,
           help="Seconds between heartbeats [default: 1.0]."),
    option("--liveness", "heartbeat__liveness", type=int,
           help="Missed heartbeats before a peer is declared dead [default: 3]."),
    option("--cluster", "cluster__name",
           help="This daemon's cluster: a broker refuses the workers and gateways of another "
                "[default: default; serve: a new serve-<random> per run]."),
    option("--log-level", "log__level",
           type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
           help="Log verbosity [default: INFO]."),
]


def common_options(func: Callable) -> Callable:
    """``--config``, ``--heartbeat-interval``, ``--liveness``, ``--cluster`` and
    ``--log-level``."""
    for add in reversed(_COMMON):
        func = add(func)
    return func
