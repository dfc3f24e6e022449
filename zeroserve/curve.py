"""CURVE encryption and authentication on the sockets between daemons (off by default).

The broker is the CURVE server on every one of its sockets (frontend, backend and
job sockets) and lets in only clients whose public key is in its allowed-keys
directory; gateways, workers (their job lanes too) and ``zeroserve status`` are
CURVE clients that know the broker's public key. Keys are ZeroMQ certificate
files, as ``zeroserve keys generate`` writes them::

    curve:
      enabled: true
      secret_key_file: keys/worker.key_secret   # this daemon's key pair
      broker_key_file: keys/broker.key          # gateways, workers, status: the broker's key
      allowed_keys_dir: keys/allowed            # broker: public keys it lets in
"""
from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from zeroserve.config import CurveSettings

log = logging.getLogger("zeroserve.curve")

ZAP_DOMAIN = b"zeroserve"
_REFUSALS_LOGGED_PER_MINUTE = 10


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

    def server(self, sock: zmq.Socket) -> None:
        """Make ``sock`` a CURVE server whose clients the broker's authenticator checks."""
        sock.curve_publickey = self.public
        sock.curve_secretkey = self.secret
        sock.curve_server = True
        sock.zap_domain = ZAP_DOMAIN


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


class _AllowedKeys:
    """The authenticator's check: a key in the allowed directory; refusals logged."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.keys = set(zmq.auth.load_certificates(str(directory)))
        self._window = (0.0, 0)

    def callback(self, domain: str, key: bytes) -> bool:
        if key in self.keys:
            return True
        started, count = self._window
        now = time.monotonic()
        if now - started > 60.0:
            started, count = now, 0
        if count < _REFUSALS_LOGGED_PER_MINUTE:
            log.warning("broker: refused a CURVE peer with public key %s: not in %s",
                        key.decode(errors="replace"), self.directory)
        self._window = (started, count + 1)
        return False


def start_authenticator(context: zmq.Context, curve: Curve) -> ThreadAuthenticator:
    """Start the broker's ZAP handler: only the allowed directory's keys get in."""
    assert curve.allowed_dir is not None
    allowed = _AllowedKeys(curve.allowed_dir)
    auth = ThreadAuthenticator(context, log=logging.getLogger("zeroserve.zap"))
    auth.start()
    auth.configure_curve_callback(domain=ZAP_DOMAIN.decode(), credentials_provider=allowed)
    log.info("broker: CURVE on, %d allowed keys in %s", len(allowed.keys), curve.allowed_dir)
    return auth


def generate(directory: Path, names: list[str]) -> list[Path]:
    """Write a key pair per name into ``directory`` and the clients' public keys into
    ``directory/allowed`` ("broker" is the server and stays out of it); return the files."""
    directory.mkdir(parents=True, exist_ok=True)
    allowed = directory / "allowed"
    allowed.mkdir(exist_ok=True)
    written = []
    for name in names:
        public, secret = zmq.auth.create_certificates(str(directory), name)
        written += [Path(public), Path(secret)]
        if name != "broker":
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
