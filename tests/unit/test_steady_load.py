"""The fault tests' tally tells a server-sent error from a call that got no answer.

The same SteadyLoad and Tally that the fault tests use drive the SDK against tiny in-process
servers on loopback: one that answers, one that answers 504 or 503 with a JSON error, one
that accepts connections and never answers, and a port nobody listens on.
"""
from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from steady_load import ANSWER_GRACE_S, SLACK_S, Outcome, SteadyLoad, Tally, classify

import zeroserve

DEADLINE_S = 0.2


def _answering(status: int, body: dict | str) -> type[BaseHTTPRequestHandler]:
    payload = json.dumps(body).encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # kept-alive, like a gateway

        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def answering() -> Iterator[Callable[[int, dict | str], str]]:
    """Starts HTTP servers that answer every POST with one status and JSON body; their URL."""
    servers: list[tuple[ThreadingHTTPServer, threading.Thread]] = []

    def start(status: int, body: dict | str) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _answering(status, body))
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def silent_url() -> Iterator[str]:
    """A server that accepts every connection, reads nothing and never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    held: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        while not done.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    done.set()
    thread.join()
    for conn in held:
        conn.close()
    listener.close()


def _drive(url: str, until: Callable[[Tally], bool], threads: int = 2) -> Tally:
    """Run a SteadyLoad against ``url`` until ``until(tally)`` holds (4 s at most); stop it."""
    load = SteadyLoad([url], "chores", "ping", threads=threads, timeout=DEADLINE_S).start()
    give_up = time.monotonic() + 4.0
    while not until(load.tally) and time.monotonic() < give_up:
        time.sleep(0.02)
    tally = load.stop()
    print("\n" + tally.line(url))
    assert tally.sent == tally.succeeded + tally.failed_total + tally.hung
    return tally


def test_a_server_that_never_answers_counts_as_hung_not_failed(silent_url: str) -> None:
    tally = _drive(silent_url, lambda t: t.hung > 0)
    assert tally.hung_reasons["no answer"] > 0
    assert tally.failed_total == 0 and tally.succeeded == 0


def test_a_504_sent_by_the_server_counts_as_failed_not_hung(answering) -> None:
    url = answering(504, {"error": "deadline exceeded after 200 ms waiting in the queue"})
    tally = _drive(url, lambda t: t.failed_total >= 10)
    assert tally.failed["DeadlineExceeded"] == tally.failed_total > 0
    assert tally.hung == 0 and tally.succeeded == 0


def test_a_503_until_the_deadline_counts_as_failed_not_hung(answering) -> None:
    url = answering(503, {"error": "no worker serves 'chores'"})
    tally = _drive(url, lambda t: t.failed_total > 0)
    assert tally.failed["Overloaded"] == tally.failed_total > 0
    assert tally.hung == 0 and tally.succeeded == 0


def test_no_gateway_listening_until_the_deadline_counts_as_hung() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"  # bound, not listening: refused
        tally = _drive(url, lambda t: t.hung > 0)
    assert tally.hung_reasons["unreachable"] == tally.hung > 0
    assert tally.failed_total == 0 and tally.succeeded == 0


def test_answers_count_as_succeeded(answering) -> None:
    tally = _drive(answering(200, "pong"), lambda t: t.succeeded >= 10)
    assert tally.succeeded >= 10 and tally.failed_total == 0 and tally.hung == 0


def test_classify_counts_a_late_answer_as_hung() -> None:
    late = DEADLINE_S + ANSWER_GRACE_S + SLACK_S + 0.1
    assert classify(None, late, DEADLINE_S) == (Outcome.HUNG, "answered late")
    assert classify(zeroserve.ServerError(500, "boom"), late, DEADLINE_S)[0] is Outcome.HUNG
    assert classify(None, DEADLINE_S + ANSWER_GRACE_S, DEADLINE_S) == (Outcome.SUCCEEDED, "")
    assert classify(zeroserve.ServerError(500, "boom"), 0.1, DEADLINE_S) == \
        (Outcome.FAILED, "ServerError")
    assert classify(ValueError("x"), 0.1, DEADLINE_S) == (Outcome.FAILED, "unexpected ValueError")
