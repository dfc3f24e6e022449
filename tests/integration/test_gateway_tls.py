"""TLS on the gateway's own ports: the SDK over https:// and grpcs://, tritonclient over https,
mTLS (a client CA: no certificate, no call; refused handshakes logged once per interval), the
clear-text warning of a gateway that takes API
keys from other hosts, unreadable files as start-up errors, and ``serve`` ready over https.

The certificates are made here with the ``openssl`` command: a server CA and the gateway's
certificate for 127.0.0.1 (subjectAltName IP:127.0.0.1), a client CA and a client certificate,
and a CA nobody trusts."""
from __future__ import annotations

import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from cluster import EXAMPLES, FAST_ENV, ROOT, Cluster, Daemon, free_port

import zeroserve
from gateway.api_keys import digest, new_key

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")]

ROW = np.zeros((1, 64), np.float32)
_LEAF = ("basicConstraints=CA:FALSE\nsubjectKeyIdentifier=hash\n"
         "authorityKeyIdentifier=keyid,issuer\nkeyUsage=critical,digitalSignature,"
         "keyEncipherment\n")


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)


def _ca(folder: Path, name: str) -> tuple[Path, Path]:
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
             "-days", "2", "-subj", f"/CN=zeroserve test {name}",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return cert, key


def _leaf(folder: Path, name: str, ca: tuple[Path, Path], extensions: str) -> tuple[Path, Path]:
    cert, key, csr, ext = (folder / f"{name}.pem", folder / f"{name}.key",
                           folder / f"{name}.csr", folder / f"{name}.ext")
    ext.write_text(_LEAF + extensions)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
             "-subj", f"/CN={name}")
    _openssl("x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial",
             "-out", cert, "-days", "2", "-extfile", ext)
    return cert, key


@dataclass(frozen=True)
class Pki:
    """The files of the test: each certificate with its key."""

    ca: Path            # issued the server's certificate
    server: tuple[Path, Path]
    client_ca: Path     # issued the client's certificate
    client: tuple[Path, Path]
    stranger_ca: Path   # issued nothing the gateway knows
    stranger: tuple[Path, Path]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca, client_ca, stranger_ca = (_ca(folder, n) for n in ("ca", "client-ca", "stranger-ca"))
    return Pki(ca=ca[0],
               server=_leaf(folder, "server", ca, "subjectAltName=IP:127.0.0.1\n"
                                                  "extendedKeyUsage=serverAuth\n"),
               client_ca=client_ca[0],
               client=_leaf(folder, "client", client_ca, "extendedKeyUsage=clientAuth\n"),
               stranger_ca=stranger_ca[0],
               stranger=_leaf(folder, "stranger", stranger_ca, "extendedKeyUsage=clientAuth\n"))


def _tls_flags(pki: Pki, mtls: bool = False) -> list[str]:
    flags = ["--tls-cert", str(pki.server[0]), "--tls-key", str(pki.server[1])]
    return flags + (["--tls-client-ca", str(pki.client_ca)] if mtls else [])


def _wait_ready_https(cluster: Cluster, context: ssl.SSLContext, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    url = f"https://127.0.0.1:{cluster.http_port}/readyz"
    while time.monotonic() < deadline:
        for d in cluster.daemons:
            assert d.alive() or d.stopped, f"{d.name} exited:\n{d.log()}"
        try:
            with urllib.request.urlopen(url, timeout=1.0, context=context) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise TimeoutError("\n".join(f"--- {d.name}\n{d.log()[-2000:]}" for d in cluster.daemons))


def _start(cluster: Cluster, pki: Pki, mtls: bool = False) -> None:
    cluster.broker()
    cluster.gateway(*_tls_flags(pki, mtls))
    cluster.worker()
    context = ssl.create_default_context(cafile=str(pki.ca))
    if mtls:
        context.load_cert_chain(*map(str, pki.client))
    _wait_ready_https(cluster, context)


def _urls(cluster: Cluster) -> tuple[str, str]:
    return f"https://127.0.0.1:{cluster.http_port}", f"grpcs://127.0.0.1:{cluster.grpc_port}"


def test_tls_gateway_answers_clients_that_trust_its_ca_and_only_them(cluster, pki):
    _start(cluster, pki)
    for url in _urls(cluster):
        with zeroserve.Client(url, ca_file=str(pki.ca)) as client:
            assert client.call("mlp", "predict", x=ROW).shape == (1, 10)
            assert client.infer("mlp", {"x": ROW})["output"].shape == (1, 10)
            big = np.ones((1 << 13, 64), np.float32)  # 2 MiB: read into one buffer over TLS
            assert client.call("mlp", "predict", x=big, timeout=60).shape == (1 << 13, 10)
        with zeroserve.Client(url, ca_file=str(pki.stranger_ca), timeout=5.0,
                              retry=False) as client, pytest.raises(zeroserve.Unreachable):
            client.call("mlp", "predict", x=ROW)
    for plain in (cluster.url, f"grpc://127.0.0.1:{cluster.grpc_port}"):
        with zeroserve.Client(plain, timeout=5.0, retry=False) as client, \
                pytest.raises(zeroserve.ZeroserveError):
            client.call("mlp", "predict", x=ROW)
    assert "gateway: TLS on" in cluster.daemons[1].log()


def test_a_stream_over_https_comes_chunk_by_chunk_to_its_end(cluster, pki):
    _start(cluster, pki)
    cluster.test_worker("Streamer")
    url = f"https://127.0.0.1:{cluster.http_port}"
    with zeroserve.Client(url, ca_file=str(pki.ca), timeout=20.0) as client:
        deadline = time.monotonic() + 30
        while "streamer" not in client.services() and time.monotonic() < deadline:
            time.sleep(0.1)
        # each chunk is written while the client sends nothing: none may wait for it to
        assert list(client.stream("streamer", "count", n=5, delay_s=0.05)) == list(range(5))


def test_tritonclient_infers_over_https(cluster, pki):
    triton = pytest.importorskip("tritonclient.http")
    _start(cluster, pki)
    http = triton.InferenceServerClient(f"127.0.0.1:{cluster.http_port}", ssl=True,
                                        ssl_options={"ca_certs": str(pki.ca)})
    try:
        x = triton.InferInput("x", [1, 64], "FP32")
        x.set_data_from_numpy(ROW)
        assert http.is_server_ready()
        assert http.infer("mlp", [x]).as_numpy("output").shape == (1, 10)
    finally:
        http.close()


def test_with_a_client_ca_only_clients_with_its_certificate_are_answered(cluster, pki):
    _start(cluster, pki, mtls=True)
    for url in _urls(cluster):
        with zeroserve.Client(url, ca_file=str(pki.ca), cert_file=str(pki.client[0]),
                              key_file=str(pki.client[1])) as client:
            assert client.call("mlp", "predict", x=ROW).shape == (1, 10)
        for cert, key in ((None, None), tuple(map(str, pki.stranger))):
            with zeroserve.Client(url, ca_file=str(pki.ca), cert_file=cert, key_file=key,
                                  timeout=5.0, retry=False) as client, \
                    pytest.raises(zeroserve.ZeroserveError):
                client.call("mlp", "predict", x=ROW)
    log = cluster.daemons[1].log()
    assert "gateway: TLS on, client certificates required" in log
    # 4 refused HTTP handshakes (the SDK's listing and its call, twice): reported, not a line each
    assert "SSL Error on" not in log and 1 <= log.count("TLS handshakes failed") <= 2


def _gateway_started(daemon: Daemon, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while "gateway: TLS " not in daemon.log():
        assert daemon.alive(), daemon.log()
        assert time.monotonic() < deadline, daemon.log()
        time.sleep(0.1)
    return daemon.log()


def test_keys_on_beyond_loopback_without_tls_warns_and_with_tls_does_not(cluster, pki):
    keys = cluster.tmp / "keys.yaml"
    keys.write_text(f"keys:\n  - {{name: a, sha256: {digest(new_key())}, services: ['*']}}\n")
    with_keys = {"ZEROSERVE_GATEWAY_API_KEYS_FILE": str(keys)}
    warning = "gateway: TLS is off and API keys are on, on 0.0.0.0"

    plain = cluster.gateway("--host", "0.0.0.0", env=with_keys)
    log = _gateway_started(plain)
    assert sum(warning in line and "WARNING" in line for line in log.splitlines()) == 1
    plain.stop()
    secure = cluster.gateway("--host", "0.0.0.0", *_tls_flags(pki), env=with_keys)
    assert "TLS is off" not in _gateway_started(secure)
    secure.stop()
    loopback = cluster.gateway(env=with_keys)
    assert "TLS is off" not in _gateway_started(loopback)


def test_a_certificate_or_key_that_cannot_be_read_stops_the_gateway_naming_it(cluster, pki):
    missing = cluster.tmp / "missing.pem"
    for flags, named in ((["--tls-cert", str(missing), "--tls-key", str(pki.server[1])],
                          f"gateway.tls_cert_file {missing}"),
                         (["--tls-cert", str(pki.server[0]), "--tls-key", str(pki.client[1])],
                          str(pki.client[1])),  # not the certificate's key
                         (["--tls-client-ca", str(pki.client_ca)], "gateway.tls_cert_file")):
        gateway = cluster.gateway(*flags)
        assert gateway.proc.wait(20) == 1
        assert named in gateway.log()


def test_serve_with_tls_checks_readiness_over_https_and_serves_https(tmp_path, pki):
    http = free_port()
    argv = [sys.executable, "-m", "zeroserve", "serve", str(EXAMPLES / "mlp.py") + ":MLP",
            "--http-port", str(http), "--grpc-port", str(free_port()), "--host", "127.0.0.1",
            "--metrics-port", "0", "--workers", "1",
            "--frontend", f"tcp://127.0.0.1:{free_port()}",
            "--backend", f"tcp://127.0.0.1:{free_port()}"]
    env = {**os.environ, **FAST_ENV, "ZEROSERVE_JOBS_STORE_PATH": str(tmp_path / "jobs.db")}
    refused = subprocess.run(argv + ["--tls-cert", str(tmp_path / "none.pem"),
                                     "--tls-key", str(pki.server[1])],
                             cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and str(tmp_path / "none.pem") in refused.stderr
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv + _tls_flags(pki), stdout=log, stderr=subprocess.STDOUT,
                                cwd=str(ROOT), env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while "serve: ready" not in log_path.read_text():
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        assert f"https://localhost:{http}" in log_path.read_text()
        with zeroserve.Client(f"https://127.0.0.1:{http}", ca_file=str(pki.ca)) as client:
            assert client.call("mlp", "predict", x=ROW).shape == (1, 10)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
