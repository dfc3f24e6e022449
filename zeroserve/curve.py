"""CURVE encryption and authentication on the sockets between daemons (off by default).

The broker is the CURVE server on every one of its sockets (frontend, backend and
job sockets) and lets in only clients whose public key is in its allowed-keys
directory, on the channels that the key's role may use; gateways, workers (their
job lanes too) and ``zeroserve status`` are CURVE clients that know the broker's
public key. A key's role is the subdirectory of the allowed-keys directory it is
in (:data:`ROLES`); a key directly in it, as older versions wrote them, may use
every channel. A worker's key may use the frontend for calls of other services
(``zeroserve.depends``) and the service listing, never for other control calls: the broker
learns each message's role from the ZAP handler (its ``User-Id``) and drops the rest
(:data:`WORKER_CONTROL_OPS`). Keys are ZeroMQ certificate files, as ``zeroserve keys generate``
writes them::

    curve:
      enabled: true
      secret_key_file: keys/worker.key_secret   # this daemon's key pair
      broker_key_file: keys/broker.key          # gateways, workers, status: the broker's key
      allowed_keys_dir: keys/allowed            # broker: public keys it lets in
"""
from __future__ import annotations

import enum
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
import zmq.utils.z85
from zmq.auth.thread import ThreadAuthenticator

from zeroserve.config import CurveSettings

log = logging.getLogger("zeroserve.curve")

_REFUSALS_LOGGED_PER_MINUTE = 10


class Channel(str, enum.Enum):  # noqa: UP042 (StrEnum needs 3.11)
    """A kind of broker socket; its name is the ZAP domain of the sockets that serve it."""

    FRONTEND = "frontend"  # gateways and operator tools: requests and control calls;
                           # workers: dependency calls
    BACKEND = "backend"    # workers: registration, batches, results
    JOBS = "jobs"          # workers' job lanes: jobs and their events


# role (the allowed-keys subdirectory) -> the channels its keys may use
ROLES: dict[str, frozenset[Channel]] = {
    "gateway": frozenset({Channel.FRONTEND}),
    "operator": frozenset({Channel.FRONTEND}),
    "worker": frozenset({Channel.BACKEND, Channel.JOBS, Channel.FRONTEND}),
}
WORKER_CONTROL_OPS = frozenset({"models"})  # the control calls a worker's key may make
ANY_ROLE = "any"  # a key directly in the allowed-keys directory


class CurveError(ValueError):
    """CURVE settings that cannot be used; the message names the file or setting."""


@dataclass(frozen=True)
class Curve:
    """This daemon's key pair, the broker's public key (clients) and the allowed keys
    directory (broker)."""

    public: bytes
    secret: bytes
    broker_public: bytes | None = None
    allowed_dir: Path | None = None

    def client(self, sock: zmq.Socket) -> None:
        """Make ``sock`` a CURVE client of the broker (call before connect or bind)."""
        if self.broker_public is None:
            raise CurveError("curve.broker_key_file is needed to talk to the broker")
        sock.curve_publickey = self.public
        sock.curve_secretkey = self.secret
        sock.curve_serverkey = self.broker_public

    def server(self, sock: zmq.Socket, channel: Channel) -> None:
        """Make ``sock`` a CURVE server of ``channel``, whose clients the broker's
        authenticator checks against the keys allowed there."""
        sock.curve_publickey = self.public
        sock.curve_secretkey = self.secret
        sock.curve_server = True
        sock.zap_domain = channel.value.encode()


def _read_pair(path: str) -> tuple[bytes, bytes]:
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise CurveError(f"curve: cannot read the key pair {path}: {exc}") from None
    if secret is None:
        raise CurveError(f"curve: {path} holds no secret key (use the .key_secret file)")
    return public, secret


def _read_public(path: str) -> bytes:
    try:
        return zmq.auth.load_certificate(path)[0]
    except (OSError, ValueError) as exc:
        raise CurveError(f"curve: cannot read the public key {path}: {exc}") from None


def from_settings(settings: CurveSettings, role: str) -> Curve | None:
    """The CURVE keys of a daemon (``role`` "broker" or "client"); None when CURVE is off."""
    if not settings.enabled:
        return None
    secret_file = settings.secret_key_file
    if not secret_file:
        raise CurveError("curve.enabled needs curve.secret_key_file (zeroserve keys generate)")
    public, secret = _read_pair(secret_file)
    if role == "broker":
        allowed = settings.allowed_keys_dir
        if not allowed or not Path(allowed).is_dir():
            raise CurveError(f"curve.allowed_keys_dir must name a directory, got {allowed!r}")
        return Curve(public, secret, allowed_dir=Path(allowed))
    broker_file = settings.broker_key_file
    if not broker_file:
        raise CurveError("curve.enabled needs curve.broker_key_file (the broker's public key)")
    return Curve(public, secret, broker_public=_read_public(broker_file))


def allowed_roles(directory: Path) -> dict[bytes, str]:
    """The role of each public key in the allowed-keys ``directory``: that of the
    subdirectory it is in, :data:`ANY_ROLE` for one directly in ``directory``."""
    roles = {key: ANY_ROLE for key in zmq.auth.load_certificates(str(directory))}
    for role in ROLES:
        if (directory / role).is_dir():
            roles.update((key, role) for key in zmq.auth.load_certificates(str(directory / role)))
    return roles


def may_use(role: str | None, channel: Channel) -> bool:
    """Whether a key of ``role`` (None: not allowed at all) may use ``channel``."""
    return role == ANY_ROLE or (role is not None and channel in ROLES.get(role, ()))


class _AllowedKeys:
    """The authenticator's check of one channel: a key whose role may use it; refusals
    logged (at most ten lines a minute over every channel)."""

    def __init__(self, directory: Path, roles: dict[bytes, str], channel: Channel,
                 window: list[float]) -> None:
        self.directory, self.roles, self.channel = directory, roles, channel
        self._window = window  # [start, count], shared by the channels

    def callback(self, domain: str, key: bytes) -> bool:
        role = self.roles.get(key)
        if may_use(role, self.channel):
            return True
        now = time.monotonic()
        if now - self._window[0] > 60.0:
            self._window[:] = [now, 0]
        if self._window[1] < _REFUSALS_LOGGED_PER_MINUTE:
            why = f"not in {self.directory}" if role is None else \
                f"a {role} key may not use the {self.channel.value}"
            log.warning("broker: refused a CURVE peer with public key %s on the %s: %s",
                        key.decode(errors="replace"), self.channel.value, why)
        self._window[1] += 1
        return False


def start_authenticator(context: zmq.Context, curve: Curve) -> ThreadAuthenticator:
    """Start the broker's ZAP handler: on each channel, only the keys whose role may use it."""
    assert curve.allowed_dir is not None
    roles = allowed_roles(curve.allowed_dir)
    auth = ThreadAuthenticator(context, log=logging.getLogger("zeroserve.zap"))
    # the User-Id of every message of a connection: its key's role (what the broker checks)
    auth.curve_user_id = lambda key: roles.get(  # type: ignore[method-assign,assignment]
        zmq.utils.z85.encode(key), "")
    auth.start()
    window = [0.0, 0.0]
    for channel in Channel:
        auth.configure_curve_callback(domain=channel.value, credentials_provider=_AllowedKeys(
            curve.allowed_dir, roles, channel, window))
    log.info("broker: CURVE on, %d allowed keys in %s", len(roles), curve.allowed_dir)
    unroled = sum(role == ANY_ROLE for role in roles.values())
    if unroled:
        log.warning("broker: %d allowed keys have no role (they are directly in %s, not in %s) "
                    "and may use every channel; move each into the folder of its role",
                    unroled, curve.allowed_dir, ", ".join(f"{r}/" for r in ROLES))
    return auth


def role_of(name: str) -> str:
    """The role ``zeroserve keys generate`` gives a key by its name: ``gateway...`` and
    ``worker...`` are gateways and workers, any other name an operator (``zeroserve status``)."""
    return next((role for role in ("gateway", "worker") if name.startswith(role)), "operator")


def generate(directory: Path, names: list[str]) -> list[Path]:
    """Write a key pair per name into ``directory`` and each client's public key into
    ``directory/allowed/<its role>`` ("broker" is the server and stays out of it); return
    the files."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names:
        public, secret = zmq.auth.create_certificates(str(directory), name)
        written += [Path(public), Path(secret)]
        if name != "broker":
            allowed = directory / "allowed" / role_of(name)
            allowed.mkdir(parents=True, exist_ok=True)
            written.append(Path(shutil.copy(public, allowed / Path(public).name)))
    return written


def reachable_from_other_hosts(endpoint: str) -> bool:
    """Whether a bound ZeroMQ ``endpoint`` (``tcp://host:port``) accepts peers on other hosts:
    any TCP address but a loopback one (``ipc://`` and ``inproc://`` never do)."""
    scheme, _, rest = endpoint.partition("://")
    if scheme != "tcp":
        return False
    host = rest.rpartition(":")[0].strip("[]").lower()
    return not (host == "localhost" or host == "::1" or host.startswith("127."))
