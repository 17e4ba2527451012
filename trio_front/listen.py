"""hypercorn's configuration for a frontend: where to listen and with which limits."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

import hypercorn.config

if TYPE_CHECKING:
    from .server import FrontendConfig


def hypercorn_config(config: FrontendConfig) -> hypercorn.config.Config:
    hconfig = hypercorn.config.Config()
    bind = f"{config.host}:{config.port}"
    hconfig.bind = [_shared_bind(config.host, config.port) if config.reuse_port else bind]
    hconfig.graceful_timeout = config.graceful_timeout
    hconfig.backlog = 2048
    hconfig.keep_alive_timeout = 75
    hconfig.accesslog = None
    # WebSocket keep-alives are protocol pings, sent by hypercorn; SSE ones are comments (streaming.py).
    hconfig.websocket_ping_interval = config.keep_alive_interval
    return hconfig


def _shared_bind(host: str, port: int) -> str:
    """A listening socket several worker processes bind together (the kernel balances connections)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return f"fd://{sock.detach()}"
