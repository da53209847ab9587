"""Serve many simulated hosts from one process.

One acceptor thread watches every listening socket with ``selectors`` (no thread per idle host);
each accepted connection gets its own short-lived thread that runs the keep-alive HTTP handler
(TLS handshake included, so a slow client never blocks the acceptor). Connection threads are
capped; beyond the cap a new connection waits for a free slot. Designed for 500 hosts and ~50
concurrent clients on 2 cores.

Every listener binds to a loopback address: anything outside 127.0.0.0/8 is refused.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import selectors
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field

from cpuu_fleet.lab.transport import HostEndpoint, WSManRequestHandler

log = logging.getLogger(__name__)

REAP_EVERY_S = 1.0
"""How often idle shells are looked for (cheap: a few shells per host at most)."""

MAX_CONNECTIONS = 512
"""Connection threads alive at once (each long-poll holds one)."""


def assert_loopback(address: str) -> None:
    """The lab must never listen outside 127.0.0.0/8."""
    if ipaddress.ip_address(address) not in ipaddress.ip_network("127.0.0.0/8"):
        raise ValueError(f"lab hosts listen on 127.0.0.0/8 only, not {address}")


@dataclass
class LabServer:
    """Listeners for many :class:`HostEndpoint` objects, one acceptor thread for all."""

    ssl_context: ssl.SSLContext | None = None
    max_connections: int = MAX_CONNECTIONS
    _selector: selectors.BaseSelector = field(default_factory=selectors.DefaultSelector)
    _listeners: dict[int, tuple[socket.socket, HostEndpoint]] = field(default_factory=dict)
    _connections: set[socket.socket] = field(default_factory=set)
    _reserved: list[socket.socket] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _slots: threading.BoundedSemaphore = field(init=False)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _wake_r: socket.socket | None = None
    _wake_w: socket.socket | None = None

    def __post_init__(self) -> None:
        self._slots = threading.BoundedSemaphore(self.max_connections)

    def add(self, endpoint: HostEndpoint) -> None:
        """Bind and listen for one host (call before or after :meth:`start`)."""
        assert_loopback(endpoint.address)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((endpoint.address, endpoint.port))
        sock.listen(64)
        sock.setblocking(False)
        with self._lock:
            self._listeners[sock.fileno()] = (sock, endpoint)
            self._selector.register(sock, selectors.EVENT_READ, endpoint)

    def reserve(self, address: str, port: int) -> None:
        """Hold an address without listening: clients get "connection refused" (a host that is
        off), and no other lab in this machine can take the address meanwhile."""
        assert_loopback(address)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((address, port))
        self._reserved.append(sock)

    def start(self) -> None:
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._thread = threading.Thread(target=self._accept_loop, name="lab-acceptor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Close the listeners and every open connection; stop all shells' pipelines."""
        self._stop.set()
        if self._wake_w is not None:
            self._wake_w.send(b"x")
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            listeners = list(self._listeners.values())
            self._listeners.clear()
            connections = list(self._connections)
        for sock, endpoint in listeners:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(sock)
            sock.close()
            endpoint.dispatcher.close_all()
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        self._selector.close()
        for sock in self._reserved:
            sock.close()
        for sock in (self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()

    # -- internals ---------------------------------------------------------------------

    def _reap(self) -> None:
        with self._lock:
            endpoints = [endpoint for _, endpoint in self._listeners.values()]
        now = time.monotonic()
        for endpoint in endpoints:
            endpoint.dispatcher.reap_idle(now)

    def _accept_loop(self) -> None:
        next_reap = time.monotonic() + REAP_EVERY_S
        while not self._stop.is_set():
            if time.monotonic() >= next_reap:
                self._reap()
                next_reap = time.monotonic() + REAP_EVERY_S
            for key, _ in self._selector.select(timeout=1.0):
                if key.data is None:
                    return  # woken up by stop()
                endpoint: HostEndpoint = key.data
                try:
                    conn, peer = key.fileobj.accept()  # type: ignore[union-attr]
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    if self._stop.is_set():
                        return
                    continue
                conn.setblocking(True)
                self._slots.acquire()
                thread = threading.Thread(
                    target=self._serve,
                    args=(conn, peer, endpoint),
                    name=f"lab-conn-{endpoint.name}",
                    daemon=True,
                )
                thread.start()

    def _serve(self, conn: socket.socket, peer: tuple[str, int], endpoint: HostEndpoint) -> None:
        try:
            if endpoint.https:
                if self.ssl_context is None:
                    raise RuntimeError("an HTTPS host needs the server's ssl_context")
                conn.settimeout(30)
                conn = self.ssl_context.wrap_socket(conn, server_side=True)
            with self._lock:
                self._connections.add(conn)
            WSManRequestHandler(conn, peer, endpoint)  # type: ignore[arg-type]
        except (OSError, ssl.SSLError) as exc:
            log.debug("%s: connection from %s ended: %s", endpoint.name, peer, exc)
        except Exception:
            log.exception("%s: connection handler failed", endpoint.name)
        finally:
            with self._lock:
                self._connections.discard(conn)
            with contextlib.suppress(OSError):
                conn.close()
            self._slots.release()
