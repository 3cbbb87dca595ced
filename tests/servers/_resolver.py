"""Test host names that resolve to loopback, through aiohttp's public resolver interface.

``Tagger(connector=functools.partial(loopback_connector, names, cafile))`` makes every
request of the Tagger (detection included) reach ``127.0.0.1`` for ``names``, with TLS
checked against ``cafile``, so tests can play Hugging Face's host names without DNS,
``/etc/hosts`` or patching anything.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver


class LoopbackResolver(AbstractResolver):
    """Resolves the given names (and 127.0.0.1) to 127.0.0.1; refuses every other name."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = frozenset(name.lower() for name in names) | {"127.0.0.1", "localhost"}

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[Any]:
        if host.lower() not in self.names:
            raise OSError(f"{host} is not one of the test's host names")
        return [
            {
                "hostname": host,
                "host": "127.0.0.1",
                "port": port,
                "family": socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
        ]

    async def close(self) -> None:
        return None


def loopback_connector(names: tuple[str, ...], cafile: str | None = None) -> aiohttp.TCPConnector:
    """A connector for ``Tagger(connector=...)``: ``names`` on loopback, TLS trusting ``cafile``."""
    context: ssl.SSLContext | bool = ssl.create_default_context(cafile=cafile) if cafile else True
    return aiohttp.TCPConnector(limit=0, resolver=LoopbackResolver(names), ssl=context)
