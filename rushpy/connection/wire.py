"""Connection classes that pack commands in C and send large values without copies.

Used by :func:`rushpy.connection.create_client` when hiredis is installed
(:data:`HIREDIS_PACKING`); otherwise redis-py's own classes serve.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from typing import Any

from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["HIREDIS_PACKING", "TCPConnection", "TLSConnection", "UnixConnection"]

try:
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover - hiredis is a dependency, but stay usable without it
    _hiredis_pack = None  # type: ignore[assignment]


_LARGE_ARG = 1 << 20
"""Arguments of at least this many bytes are sent by reference, never copied into a packed command."""

_SEND_SLICE = 1 << 20
"""Bytes handed to the socket transport at once when a command is large."""


class _FastPacking:
    """Pack commands with hiredis's C encoder; send large ones without copies.

    redis-py's asyncio connections encode arguments in Python; for the long
    argument lists of batched scripts (thousands of keys and values) that was
    the largest CPU cost of a worker. hiredis produces the same bytes.

    A command with a large argument (a big task value) is packed by redis-py's
    own packer instead, which keeps such arguments as separate pieces, and is
    written a slice at a time: hiredis would copy the value into the packed
    command, and asyncio's ``writelines`` (Python 3.11) joins every piece into
    one more copy, then copies what the socket did not take into its buffer.
    """

    def pack_command(self, *args: Any) -> list[bytes]:
        # sys.getsizeof is a C call on any argument (a bytes value's size is its
        # length plus a small header): one pass in C finds a large argument,
        # where a Python loop over thousands of arguments cost a third of packing.
        if max(map(sys.getsizeof, args), default=0) >= _LARGE_ARG:
            packed: list[bytes] = super().pack_command(*args)  # type: ignore[misc]
            return packed
        first = args[0]
        if isinstance(first, str) and " " in first:
            args = tuple(first.encode().split()) + args[1:]
        elif isinstance(first, bytes) and b" " in first:
            args = tuple(first.split()) + args[1:]
        return [_hiredis_pack(args)]

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        if isinstance(command, list) and len(command) > 1 and sum(map(len, command)) > _SEND_SLICE:
            for part in _slices(command):
                await super().send_packed_command(part, check_health)  # type: ignore[misc]
                check_health = False
            return
        timeout = self.socket_timeout  # type: ignore[attr-defined]
        if not timeout or not self.is_connected or isinstance(command, str):  # type: ignore[attr-defined]
            await super().send_packed_command(command, check_health)  # type: ignore[misc]
            return
        # redis-py bounds this write with asyncio.wait_for, which (Python 3.11) runs it
        # in a new task: the bytes leave one turn of the event loop later, on every
        # command (W2's critical path has four). asyncio.timeout bounds the same
        # write in this task. Errors are handled as redis-py handles them.
        if check_health:
            await self.check_health()  # type: ignore[attr-defined]
        try:
            async with asyncio.timeout(timeout):
                writer = self._writer  # type: ignore[attr-defined]
                writer.writelines([command] if isinstance(command, bytes) else command)
                await writer.drain()
        except TimeoutError:
            await self.disconnect(nowait=True)  # type: ignore[attr-defined]
            raise RedisTimeoutError("Timeout writing to socket") from None
        except OSError as exc:
            await self.disconnect(nowait=True)  # type: ignore[attr-defined]
            raise RedisConnectionError(f"Error while writing to socket: {exc}") from exc
        except BaseException:
            # A write cut half-way (a cancellation) leaves the connection unusable.
            await self.disconnect(nowait=True)  # type: ignore[attr-defined]
            raise


def _slices(pieces: list[bytes]) -> Iterator[list[memoryview]]:
    """Runs of ``pieces`` of about :data:`_SEND_SLICE` bytes, large pieces cut into views."""
    run: list[memoryview] = []
    size = 0
    for piece in pieces:
        view = memoryview(piece)
        for start in range(0, max(len(view), 1), _SEND_SLICE):
            part = view[start : start + _SEND_SLICE]
            run.append(part)
            size += len(part)
            if size >= _SEND_SLICE:
                yield run
                run, size = [], 0
    if run:
        yield run


class TCPConnection(_FastPacking, Connection):
    """TCP connection with fast packing."""


class TLSConnection(_FastPacking, SSLConnection):
    """TLS connection with fast packing."""


class UnixConnection(_FastPacking, UnixDomainSocketConnection):
    """Unix-socket connection with fast packing."""


HIREDIS_PACKING = _hiredis_pack is not None
"""Whether hiredis's C packer is available (it is a dependency; this guards odd installs)."""
