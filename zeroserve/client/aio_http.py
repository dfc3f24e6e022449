"""A small asyncio HTTP/1.1 client with kept-alive connections, for :class:`AsyncClient`.

Only what talking to a zeroserve gateway needs: one host, request bodies with a
Content-Length, answers with a Content-Length or chunked.
"""
from __future__ import annotations

import asyncio

from zeroserve.client.errors import Unreachable

_MAX_HEADER_BYTES = 64 * 1024


class AsyncHttpConnectionPool:
    """Idle connections to one ``host:port``, reused across requests."""

    def __init__(self, host: str, port: int, url: str) -> None:
        self.host, self.port, self.url = host, port, url
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def request(self, method: str, path: str, body: bytes | None,
                      headers: dict[str, str], timeout_s: float
                      ) -> tuple[int, dict[str, str], bytes]:
        """(status, headers with lower-case names, body); raises TimeoutError after
        ``timeout_s`` and :class:`Unreachable` when no connection can be made."""
        return await asyncio.wait_for(self._request(method, path, body, headers), timeout_s)

    async def _request(self, method: str, path: str, body: bytes | None,
                       headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        for attempt in (1, 2):
            reused = bool(self._idle)
            reader, writer = await self._connect()
            try:
                writer.write(_head(method, path, self.host, body, headers))
                if body:
                    writer.write(body)
                await writer.drain()
                status, reply_headers, reply = await _read_response(reader)
            except (ConnectionError, asyncio.IncompleteReadError, ValueError) as exc:
                writer.close()
                if reused and attempt == 1:
                    continue  # the gateway closed an idle connection: once more on a new one
                raise Unreachable(503, f"the gateway at {self.url} dropped the connection: "
                                       f"{exc}") from None
            except BaseException:
                writer.close()
                raise
            if reply_headers.get("connection", "").lower() == "close":
                writer.close()
            else:
                self._idle.append((reader, writer))
            return status, reply_headers, reply
        raise AssertionError("unreachable")

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        while self._idle:
            reader, writer = self._idle.pop()
            if not writer.is_closing() and not reader.at_eof():
                return reader, writer
            writer.close()
        try:
            return await asyncio.open_connection(self.host, self.port)
        except OSError as exc:
            raise Unreachable(503, f"no gateway answered at {self.url}: {exc}") from None

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for _, writer in idle:
            writer.close()


def _head(method: str, path: str, host: str, body: bytes | None,
          headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Connection: keep-alive",
             f"Content-Length: {len(body or b'')}"]
    lines.extend(f"{k}: {v}" for k, v in headers.items())
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    if len(head) > _MAX_HEADER_BYTES:
        raise ValueError("response headers too large")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise ValueError(f"not an HTTP response: {status_line!r}")
    headers = {}
    for line in header_lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        body = await _read_chunked(reader)
    else:
        body = b""
    return int(parts[1]), headers, body


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return b"".join(chunks)
        chunks.append(await reader.readexactly(size))
        await reader.readexactly(2)
