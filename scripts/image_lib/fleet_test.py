"""``scripts/image test``: a broker, a gateway and two workers as containers on the host
network, called while one worker is killed."""
from __future__ import annotations

import argparse
import json
import random
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from image_lib import ROOT, SERVICE_MOUNT
from image_lib.engine import (
    ImageError,
    choose_engine,
    engine_options,
    image_exists,
    output,
    run,
    say,
)

EXAMPLE = "mlp.py:MLP"  # the README's example, in examples/


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports that nothing listens on, below the ephemeral range
    (which outgoing connections and the workers' job lanes draw from)."""
    ports: list[int] = []
    while len(ports) < count:
        port = random.randrange(20000, 32768)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        if port not in ports:
            ports.append(port)
    return ports


def get_json(url: str, timeout_s: float = 2.0) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def wait_for(what: str, ready: Callable[[], bool], timeout_s: float,
             fleet: Fleet) -> float:
    """Seconds until ``ready()``; ImageError (with the containers' logs) after ``timeout_s``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        try:
            if ready():
                return time.monotonic() - started
        except (OSError, ValueError):
            pass
        fleet.check_running()
        time.sleep(0.2)
    raise ImageError(f"{what}: not within {timeout_s:.0f} s\n{fleet.logs()}")


class Fleet:
    """The containers this test started, removed by :meth:`remove` whatever happens."""

    def __init__(self, engine: str, image: str) -> None:
        self.engine, self.image = engine, image
        self.prefix = f"zeroserve-image-test-{secrets.token_hex(3)}"
        self.names: list[str] = []
        self.killed: set[str] = set()

    def start(self, role: str, command: list[str], extra: Sequence[str] = ()) -> str:
        name = f"{self.prefix}-{role}"
        self.names.append(name)
        run([self.engine, "run", "--detach", "--name", name, "--network", "host",
             "--read-only", "--shm-size", "256m", *engine_options(self.engine, self.image),
             "--env", f"ZEROSERVE_CLUSTER_NAME={self.prefix}", *extra, self.image, *command],
            capture_output=True)
        return name

    def kill(self, name: str) -> None:
        self.killed.add(name)
        run([self.engine, "kill", name], capture_output=True)

    def check_running(self) -> None:
        for name in self.names:
            if name in self.killed:
                continue
            state = output([self.engine, "inspect", "--format", "{{.State.Status}}", name])
            if state != "running":
                raise ImageError(f"container {name} is {state}\n{self.logs()}")

    def logs(self) -> str:
        parts = []
        for name in self.names:
            result = subprocess.run([self.engine, "logs", "--tail", "15", name], text=True,
                                    capture_output=True)
            parts.append(f"--- {name}\n{result.stdout}{result.stderr}")
        return "\n".join(parts)

    def remove(self) -> None:
        if self.names:
            subprocess.run([self.engine, "rm", "--force", "--volumes", *self.names],
                           capture_output=True)
            say(f"removed {len(self.names)} containers ({self.prefix}-*)")
            self.names = []


class Load:
    """Callers that call the example through the gateway until told to stop, and count."""

    def __init__(self, url: str, callers: int, api_key: str = "") -> None:
        self.url, self.callers = url, callers
        self.headers = {"content-type": "application/json", "x-zeroserve-timeout": "20"}
        if api_key:
            self.headers["authorization"] = f"Bearer {api_key}"
        row = [0.1] * 64
        self.body = json.dumps({"x": [row]}).encode()
        self.lock = threading.Lock()
        self.sent = self.answered = 0
        self.failures: list[str] = []
        self.slowest_s = 0.0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._call_until_stopped, daemon=True)
                         for _ in range(callers)]

    def _call_once(self) -> None:
        request = urllib.request.Request(self.url, data=self.body, method="POST",
                                         headers=self.headers)
        started = time.monotonic()
        with self.lock:
            self.sent += 1
        try:
            with urllib.request.urlopen(request, timeout=30) as reply:
                answer = json.loads(reply.read())
            rows = answer.get("output") if isinstance(answer, dict) else answer
            if not (isinstance(rows, list) and len(rows) == 1 and len(rows[0]) == 10):
                raise ValueError(f"an answer of the wrong shape: {str(answer)[:80]}")
        except (OSError, ValueError) as exc:
            with self.lock:
                self.failures.append(f"{type(exc).__name__}: {exc}")
            return
        with self.lock:
            self.answered += 1
            self.slowest_s = max(self.slowest_s, time.monotonic() - started)

    def _call_until_stopped(self) -> None:
        while not self._stop.is_set():
            self._call_once()

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=40)


class SecureFiles:
    """CURVE keys and an API key, made by the image's own ``zeroserve keys``, and laid out per
    role as deploy/kubernetes/overlays/production mounts its Secrets (same paths, same
    variables), so that the test runs the production settings."""

    CURVE = "/etc/zeroserve/curve"
    API_KEYS = "/etc/zeroserve/api-keys"

    def __init__(self, engine: str, image: str) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="zeroserve-keys-"))
        made = self.folder / "made"
        made.mkdir()
        made.chmod(0o777)  # the image's user writes them
        run([engine, "run", "--rm", *engine_options(engine, image), "--network", "none",
             "--volume", f"{made}:/keys", image, "keys", "generate", "/keys"],
            capture_output=True)
        printed = output([engine, "run", "--rm", *engine_options(engine, image),
                          "--network", "none", image, "keys", "api", "--name", "image-test"])
        self.api_key = printed.splitlines()[0].removeprefix("key: ").strip()
        entries = printed.split("# add to the keys file (gateway.api_keys_file):", 1)[1]
        layout = {
            "broker": {"broker.key_secret": "broker.key_secret",
                       "allowed/gateway/gateway.key": "gateway.key",
                       "allowed/worker/worker.key": "worker.key"},
            "gateway": {"gateway.key_secret": "gateway.key_secret", "broker.key": "broker.key"},
            "worker": {"worker.key_secret": "worker.key_secret", "broker.key": "broker.key"},
        }
        self.options: dict[str, list[str]] = {}
        for role, files in layout.items():
            for inside, key in files.items():
                target = self.folder / role / inside
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(made / key, target)
                target.chmod(0o444)
            own = f"{self.CURVE}/{role}.key_secret"
            self.options[role] = [
                "--volume", f"{self.folder / role}:{self.CURVE}:ro",
                "--env", "ZEROSERVE_CURVE_ENABLED=true",
                "--env", f"ZEROSERVE_CURVE_SECRET_KEY_FILE={own}",
                "--env", (f"ZEROSERVE_CURVE_ALLOWED_KEYS_DIR={self.CURVE}/allowed"
                          if role == "broker" else
                          f"ZEROSERVE_CURVE_BROKER_KEY_FILE={self.CURVE}/broker.key")]
        api_keys = self.folder / "api-keys"
        api_keys.mkdir()
        (api_keys / "keys.yaml").write_text(entries.strip() + "\n")
        (api_keys / "keys.yaml").chmod(0o444)
        self.options["gateway"] += [
            "--volume", f"{api_keys}:{self.API_KEYS}:ro",
            "--env", f"ZEROSERVE_GATEWAY_API_KEYS_FILE={self.API_KEYS}/keys.yaml"]

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def example_service(engine: str, image: str) -> tuple[str, list[str], str]:
    """The worker's SERVICE argument and the mount it needs: the image's own service when it is
    the README's example, else examples/ mounted at /srv/service."""
    label = output([engine, "image", "inspect", "--format",
                    '{{index .Config.Labels "io.zeroserve.service"}}', image])
    if label in ("", "<no value>"):
        return (f"{SERVICE_MOUNT}/{EXAMPLE}",
                ["--volume", f"{ROOT / 'examples'}:{SERVICE_MOUNT}:ro"],
                f"examples/ mounted at {SERVICE_MOUNT}")
    if not label.endswith("/" + EXAMPLE):
        raise ImageError(f"{image} serves {label}; the test calls the README's example: build "
                         "it with --service examples/mlp.py:MLP, or without --service")
    return label, [], f"{label}, copied into the image"


def test(args: argparse.Namespace) -> int:
    engine = choose_engine(args.engine)
    if not image_exists(engine, args.tag):
        raise ImageError(f"no image {args.tag}: run scripts/image build first")
    labels = output([engine, "image", "inspect", "--format",
                     '{{index .Config.Labels "org.opencontainers.image.version"}} '
                     '{{index .Config.Labels "org.opencontainers.image.revision"}}', args.tag])
    service, mount, where = example_service(engine, args.tag)
    say(f"testing {args.tag} (version and commit {labels}) with {engine}; service {where}")
    frontend, backend, metrics, http, grpc = free_ports(5)
    fleet = Fleet(engine, args.tag)

    def interrupted(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {s: signal.signal(s, interrupted) for s in (signal.SIGTERM, signal.SIGHUP)}
    secure: SecureFiles | None = None
    try:
        if args.secure:
            secure = SecureFiles(engine, args.tag)
        return _run_test(fleet, service, mount, (frontend, backend, metrics, http, grpc), args,
                         secure)
    finally:
        fleet.remove()
        if secure:
            secure.remove()
        for which, handler in previous.items():
            signal.signal(which, handler)


def _run_test(fleet: Fleet, service: str, mount: list[str], ports: tuple[int, ...],
              args: argparse.Namespace, secure: SecureFiles | None) -> int:
    frontend, backend, metrics, http, grpc = ports
    extra = secure.options if secure else {"broker": [], "gateway": [], "worker": []}
    started = time.monotonic()
    broker = fleet.start("broker", ["broker", "--frontend", f"tcp://127.0.0.1:{frontend}",
                                    "--backend", f"tcp://127.0.0.1:{backend}",
                                    "--metrics-port", str(metrics)], extra["broker"])
    gateway = fleet.start("gateway", ["gateway", "--frontend", f"tcp://127.0.0.1:{frontend}",
                                      "--host", "127.0.0.1", "--http-port", str(http),
                                      "--grpc-port", str(grpc)], extra["gateway"])
    workers = [fleet.start(f"worker-{i}", ["worker", service,
                                           "--backend", f"tcp://127.0.0.1:{backend}"],
                           mount + extra["worker"])
               for i in (1, 2)]
    say(f"started broker, gateway, 2 workers (frontend {frontend}, backend {backend}, "
        f"metrics {metrics}, HTTP {http}, gRPC {grpc}, all on 127.0.0.1"
        + ("; CURVE on, API keys required)" if secure else ")"))
    base = f"http://127.0.0.1:{http}"

    def workers_registered(count: int) -> Callable[[], bool]:
        def ready() -> bool:
            status, state = get_json(f"{base}/readyz")
            return status == 200 and state.get("services", {}).get("mlp") == count
        return ready

    wait_for("the gateway ready with 2 workers", workers_registered(2), 90, fleet)
    say(f"gateway ready with 2 workers of mlp {time.monotonic() - started:.1f} s after the "
        "first container started")
    uid = output([fleet.engine, "exec", gateway, "id", "-u"])
    say(f"the gateway runs as uid {uid}")
    if uid == "0":
        raise ImageError("the gateway container runs as root")
    if fleet.engine == "podman":
        for role, name in (("broker", broker), ("gateway", gateway), ("worker", workers[0])):
            result = subprocess.run(["podman", "healthcheck", "run", name], text=True,
                                    capture_output=True)
            if result.returncode != 0:
                raise ImageError(f"the HEALTHCHECK of the {role} fails: {result.stdout}"
                                 f"{result.stderr}\n{fleet.logs()}")
            say(f"HEALTHCHECK of the {role}: {result.stdout.strip() or 'healthy'}")
    if secure:
        refused = urllib.request.Request(f"{base}/mlp/predict", data=b"{}", method="POST")
        try:
            urllib.request.urlopen(refused, timeout=5)
            raise ImageError("the gateway answered a call without an API key")
        except urllib.error.HTTPError as exc:
            if exc.code != 401:
                raise ImageError(f"a call without an API key got {exc.code}, not 401") from None
        say("a call without an API key is refused (401)")

    load = Load(f"{base}/mlp/predict", args.callers, secure.api_key if secure else "")
    load.start()
    time.sleep(args.before_kill_s)
    before = load.answered
    fleet.kill(workers[0])
    killed_at = time.monotonic()
    say(f"killed {workers[0]} ({fleet.engine} kill) after {before} answered calls")
    took = wait_for("the broker evicting the killed worker", workers_registered(1), 30, fleet)
    say(f"the gateway counts 1 worker {took:.1f} s after the kill (the broker evicts a worker "
        "after 3 missed heartbeats) and stays ready")
    time.sleep(max(0.0, args.after_kill_s - (time.monotonic() - killed_at)))
    load.stop()
    after = load.answered - before
    say(f"calls: {load.sent} sent, {load.answered} answered, {len(load.failures)} failed "
        f"({args.callers} callers; {after} answered after the kill, by the surviving worker; "
        f"slowest call {load.slowest_s:.2f} s)")
    for failure in load.failures[:5]:
        say(f"failed call: {failure}")
    if load.failures or load.answered != load.sent or after == 0:
        raise ImageError(f"not every call was answered\n{fleet.logs()}")
    say(f"passed in {time.monotonic() - started:.0f} s")
    return 0
