"""A free TCP port on 127.0.0.1, for the real services the tests start (KDC, PostgreSQL,
RabbitMQ): asked of the kernel, so parallel pytest-xdist workers never pick the same one."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port nobody listens on now (the service binds it a moment later; a clash would show
    as the service failing to start, which its helper reports)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
