"""The client's HTTP transport: one kept-alive connection per thread to one gateway."""
from __future__ import annotations

import http.client
import json
import threading
import urllib.parse
from collections.abc import Mapping
from typing import Any

import numpy as np

from zeroserve.client import payloads
from zeroserve.client.errors import Unreachable


def split_url(url: str, scheme: str) -> tuple[str, int, str]:
    """(host, port, path prefix) of ``scheme://host:port[/prefix]``."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme != scheme or not parsed.hostname:
        raise ValueError(f"expected a {scheme}://host:port URL, got {url!r}")
    default = {"http": 80, "grpc": 8001}[scheme]
    return parsed.hostname, parsed.port or default, parsed.path.rstrip("/")


class HttpTransport:
    """Calls the REST route (msgpack) and the OIP HTTP route (binary tensors)."""

    def __init__(self, url: str, api_key: str | None = None) -> None:
        self.url = url
        self.host, self.port, self.prefix = split_url(url, "http")
        self._auth = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._local = threading.local()

    def _connection(self, timeout_s: float) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout_s)
            self._local.conn = conn
        conn.timeout = timeout_s
        if conn.sock is not None:
            conn.sock.settimeout(timeout_s)
        return conn

    def request(self, method: str, path: str, body: bytes | None, headers: dict[str, str],
                timeout_s: float) -> tuple[int, http.client.HTTPMessage, bytes]:
        """(status, headers, body); reconnects once if a kept-alive connection was closed."""
        for attempt in (1, 2):
            conn = self._connection(timeout_s)
            try:
                conn.request(method, self.prefix + path, body=body,
                             headers={**self._auth, **headers})
                resp = conn.getresponse()
                return resp.status, resp.headers, resp.read()
            except TimeoutError:
                self._drop(conn)
                raise
            except (ConnectionError, http.client.HTTPException, OSError) as exc:
                self._drop(conn)
                if attempt == 2 or isinstance(exc, ConnectionRefusedError):
                    raise Unreachable(503, f"no gateway answered at {self.url}: {exc}") from None
        raise AssertionError("unreachable")

    def _drop(self, conn: http.client.HTTPConnection) -> None:
        conn.close()
        self._local.conn = None

    def call(self, service: str, endpoint: str, inputs: Mapping[str, Any],
             timeout_s: float) -> Any:
        headers = {"Content-Type": payloads.MSGPACK, "Accept": payloads.MSGPACK,
                   payloads.TIMEOUT_HEADER: f"{timeout_s:.3f}"}
        status, reply_headers, body = self.request(
            "POST", f"/{service}/{endpoint}", payloads.encode_inputs(inputs), headers,
            timeout_s + 1.0)
        if status != 200:
            raise payloads.http_error(status, body)
        if reply_headers.get("Content-Type", "").startswith(payloads.MSGPACK):
            return payloads.decode_value(body)
        return json.loads(body)

    def infer(self, model: str, inputs: Mapping[str, Any], outputs: list[str] | None,
              timeout_s: float) -> dict[str, np.ndarray]:
        body, length = payloads.infer_body(inputs, outputs)
        headers = {payloads.HEADER_LENGTH: str(length), "Content-Type": "application/octet-stream",
                   payloads.TIMEOUT_HEADER: f"{timeout_s:.3f}"}
        status, reply_headers, reply = self.request(
            "POST", f"/v2/models/{urllib.parse.quote(model)}/infer", body, headers,
            timeout_s + 1.0)
        if status != 200:
            raise payloads.http_error(status, reply)
        length_header = reply_headers.get(payloads.HEADER_LENGTH)
        return payloads.infer_outputs(reply, None if length_header is None else int(length_header))

    def services(self, timeout_s: float) -> dict[str, Any]:
        status, _, body = self.request("GET", "/v1/services", None, {}, timeout_s)
        if status != 200:
            raise payloads.http_error(status, body)
        return dict(json.loads(body)["services"])

    def health(self, timeout_s: float) -> dict[str, Any]:
        status, _, body = self.request("GET", "/readyz", None, {}, timeout_s)
        state = json.loads(body) if body else {}
        return {"live": True, "ready": status == 200, "services": state.get("services", {}),
                "reason": state.get("reason", "")}

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            self._drop(conn)
