"""A headless Chromium for the tests, driven over the DevTools protocol (a websocket, with
tornado's client: nothing more to install than Debian's ``chromium``)."""
from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from cluster import free_port
from tornado.websocket import WebSocketClientConnection, websocket_connect


def chromium_path() -> str:
    """The Chromium binary; AssertionError (the test fails, it is never skipped) without one."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "headless Chromium is needed: apt-get install -y chromium"
    return found


class Browser:
    """One Chromium process with one page; every call waits at most ``timeout_s``."""

    def __init__(self, tmp: Path, timeout_s: float = 20.0) -> None:
        self.timeout_s = timeout_s
        self.port = free_port()
        self._log = open(tmp / "chromium.log", "wb")
        self.proc = subprocess.Popen([
            chromium_path(), "--headless=new", "--no-sandbox", "--disable-gpu",
            "--disable-dev-shm-usage", "--no-first-run", "--disable-extensions",
            f"--remote-debugging-port={self.port}", f"--user-data-dir={tmp / 'chromium'}",
            "--window-size=1280,1400", "about:blank"], stdout=self._log,
            stderr=subprocess.STDOUT)
        self.loop = asyncio.new_event_loop()
        self._next = 0
        self._ws: WebSocketClientConnection | None = None
        try:
            self._ws = self.loop.run_until_complete(self._connect(self._page_socket()))
            self.call("Page.enable")
            self.call("Runtime.enable")
        except BaseException:
            self.close()
            raise

    @staticmethod
    async def _connect(url: str) -> WebSocketClientConnection:
        return await websocket_connect(url, max_message_size=64 << 20)

    def _page_socket(self) -> str:
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list",
                                            timeout=2) as resp:
                    pages = [t for t in json.loads(resp.read()) if t["type"] == "page"]
                if pages:
                    return pages[0]["webSocketDebuggerUrl"]
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"Chromium gave no page to drive (exit {self.proc.poll()})")
            time.sleep(0.2)

    def call(self, method: str, **params: Any) -> dict:
        """One DevTools command; its result (events that come meanwhile are skipped)."""
        return self.loop.run_until_complete(asyncio.wait_for(self._call(method, params),
                                                             self.timeout_s))

    async def _call(self, method: str, params: dict) -> dict:
        assert self._ws is not None
        self._next += 1
        await self._ws.write_message(json.dumps({"id": self._next, "method": method,
                                                 "params": params}))
        while True:
            message = await self._ws.read_message()
            if message is None:
                raise RuntimeError("Chromium closed the DevTools connection")
            answer = json.loads(message)
            if answer.get("id") == self._next:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-able)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout_s: float | None = None) -> Any:
        """Evaluate ``expression`` until it is truthy; its value."""
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        while True:
            try:
                value = self.evaluate(expression)
            except RuntimeError:
                value = None  # the page is still loading
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"never true in the page: {expression}")
            time.sleep(0.1)

    async def _close_socket(self) -> None:
        assert self._ws is not None
        self._ws.close()  # tornado writes the close frame on the running loop

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        """Close the DevTools socket and stop Chromium, whatever fails on the way."""
        try:
            if self._ws is not None:
                self.loop.run_until_complete(self._close_socket())
        finally:
            self.loop.close()
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self._log.close()
