"""A small HTTP/1.1 server that slow and hostile clients cannot wear down.

The daemon's endpoints (daemon/endpoints.py) are reached by Prometheus, an
uptime check and, with the webhook on, by anything on the internet that finds
the hook's address. ``http.server``'s threading server gives each connection a
thread, without a cap, and times out each read on its own: a client sending a
header byte every few seconds held a thread for as long as it liked (61 such
clients pinned 61 threads). Here:

- one asyncio loop on one thread reads every request, so a connection that
  trickles costs a buffer and a socket, never a thread;
- at most ``max_connections`` connections are open; one more closes the
  oldest that has not finished sending its request (a request that is
  complete is never dropped for room), so a flood delays nobody for long;
- the whole request (request line, headers and body) must arrive within
  ``request_deadline_s`` of the connection being accepted, not per read;
- headers are at most ``max_header_bytes`` (431), the body at most
  ``max_body_bytes`` by its Content-Length (413, read no further); a body
  without a Content-Length (chunked) is refused (411);
- the handler runs on a small thread pool (it reads state files), one request
  per connection, and the answer is written within ``write_timeout_s``.

Every refusal is reported to ``on_refused`` (the metrics count it); none is
logged, so a flood cannot fill the log either.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http import HTTPStatus

from reconciler.logs import event

REFUSALS = ("deadline", "headers_too_large", "too_large", "bad_request", "over_capacity")


@dataclass(frozen=True)
class Limits:
    max_connections: int = 256
    request_deadline_s: float = 10.0
    max_header_bytes: int = 16 * 1024
    max_headers: int = 100
    max_body_bytes: int = 1024 * 1024
    workers: int = 4
    write_timeout_s: float = 10.0


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # the target without its query
    headers: Mapping[str, str]  # names lower-cased
    body: bytes = b""


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


Handler = Callable[[Request], Response]
# (reason, path or None when the request line was not read): one of REFUSALS.
Refused = Callable[[str, str | None], None]


class _Refusal(Exception):
    def __init__(self, reason: str, status: int, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.status = status
        self.path = path


@dataclass(eq=False)
class _Connection:
    writer: asyncio.StreamWriter
    accepted: float = field(default_factory=time.monotonic)
    reading: bool = True  # still sending its request: may be closed to make room


class HttpServer:
    """Serves ``handler`` on ``bind`` from a thread of its own until ``stop``."""

    def __init__(
        self,
        bind: tuple[str, int],
        handler: Handler,
        *,
        limits: Limits | None = None,
        on_refused: Refused | None = None,
        name: str = "http",
    ) -> None:
        self.limits = limits or Limits()
        self.handler = handler
        self.on_refused = on_refused or (lambda _reason, _path: None)
        self.name = name
        # Bound here, in the caller's thread, so an address in use raises OSError to it.
        # The system's defaults otherwise, as http.server had them (``[::]`` also
        # takes IPv4 on Linux); an IPv6 literal needs an IPv6 socket.
        family = socket.AF_INET6 if ":" in bind[0] else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.socket.bind(bind)
            self.socket.listen(128)
        except OSError:
            self.socket.close()
            raise
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._open: dict[_Connection, None] = {}  # insertion order: oldest first
        self._pool = ThreadPoolExecutor(self.limits.workers, thread_name_prefix=f"{name}-handler")

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.socket.getsockname()[:2]
        return str(host), int(port)

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.socket.close()

    # -- the loop's thread -------------------------------------------------

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        server = await asyncio.start_server(
            self._client, sock=self.socket, limit=self.limits.max_header_bytes
        )
        self._ready.set()
        async with server:
            await self._stopping.wait()
            server.close()
            for connection in list(self._open):
                connection.writer.transport.abort()

    def _make_room(self) -> bool:
        """Close the oldest connection still sending its request; False when none is."""
        for connection in self._open:
            if connection.reading:
                del self._open[connection]
                connection.writer.transport.abort()
                self.on_refused("over_capacity", None)
                return True
        return False

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._open) >= self.limits.max_connections and not self._make_room():
            self.on_refused("over_capacity", None)
            writer.transport.abort()
            return
        connection = _Connection(writer)
        self._open[connection] = None
        try:
            await self._exchange(connection, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the client went away (or was closed to make room, or we stop)
        finally:
            self._open.pop(connection, None)
            writer.close()

    async def _exchange(
        self, connection: _Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        path: list[str | None] = [None]  # known once the request line is read
        try:
            async with asyncio.timeout(self.limits.request_deadline_s):
                request = await self._read(reader, writer, path)
        except TimeoutError:
            self.on_refused("deadline", path[0])
            await self._write(writer, Response(408, b"request timeout\n"))
            return
        except _Refusal as refusal:
            self.on_refused(refusal.reason, refusal.path or path[0])
            await self._write(writer, Response(refusal.status, f"{refusal}\n".encode()))
            return
        connection.reading = False
        loop = asyncio.get_running_loop()
        try:
            response = await loop.run_in_executor(self._pool, self._handle, request)
        except RuntimeError:  # the pool is shut down: we are stopping
            return
        await self._write(writer, response, head_only=request.method == "HEAD")

    def _handle(self, request: Request) -> Response:
        try:
            return self.handler(request)
        except Exception as exc:  # a bug in a handler answers 500, never kills the server
            event("http.handler_crashed", level=40, path=request.path, error=repr(exc))
            return Response(500, b"internal error\n")

    async def _read(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: list[str | None]
    ) -> Request:
        limits = self.limits
        too_large = _Refusal(
            "headers_too_large", 431, f"headers over {limits.max_header_bytes} bytes"
        )
        try:
            line = await reader.readuntil(b"\r\n")
        except asyncio.LimitOverrunError:
            raise too_large from None
        parts = line[:-2].decode("latin-1").split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _Refusal("bad_request", 400, "bad request line")
        method, target = parts[0], parts[1]
        path[0] = target.split("?", 1)[0][:200]
        headers: dict[str, str] = {}
        size = len(line)
        for count in range(limits.max_headers + 1):
            try:
                raw = await reader.readuntil(b"\r\n")
            except asyncio.LimitOverrunError:
                raise too_large from None
            size += len(raw)
            if size > limits.max_header_bytes:
                raise too_large
            if raw == b"\r\n":
                break
            if count == limits.max_headers:
                raise _Refusal("headers_too_large", 431, f"more than {limits.max_headers} headers")
            name, colon, value = raw[:-2].decode("latin-1").partition(":")
            if not colon or not name or name != name.strip():
                raise _Refusal("bad_request", 400, "bad header line")  # also obsolete folding
            key = name.lower()
            headers[key] = f"{headers[key]},{value.strip()}" if key in headers else value.strip()
        if "transfer-encoding" in headers:
            raise _Refusal("bad_request", 411, "send a Content-Length, not chunks")
        length_text = headers.get("content-length", "0")
        if not length_text.isdigit():
            raise _Refusal("bad_request", 400, "bad Content-Length")
        length = int(length_text)
        if length > limits.max_body_bytes:
            raise _Refusal("too_large", 413, f"the body is over {limits.max_body_bytes} bytes")
        if length and headers.get("expect", "").lower() == "100-continue":
            # curl asks before a body over 1 KiB, and waits a second for the answer.
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = await reader.readexactly(length) if length else b""
        return Request(method.upper(), path[0] or "/", headers, body)

    async def _write(
        self, writer: asyncio.StreamWriter, response: Response, *, head_only: bool = False
    ) -> None:
        phrase = HTTPStatus(response.status).phrase
        head = (
            f"HTTP/1.1 {response.status} {phrase}\r\n"
            f"Content-Type: {response.content_type}\r\n"
            f"Content-Length: {len(response.body)}\r\n"
            "Cache-Control: no-store\r\n"
            "Connection: close\r\n"
            "Server: reconciler\r\n\r\n"
        ).encode("latin-1")
        writer.write(head if head_only else head + response.body)
        try:
            async with asyncio.timeout(self.limits.write_timeout_s):
                await writer.drain()
        except TimeoutError:
            writer.transport.abort()
