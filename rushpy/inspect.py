"""The controller's persistence and inspection methods: save policy, ``INFO``, export and import.

:class:`InspectMethods` is a stateless mixin of :class:`~rushpy.Controller`
(like :mod:`rushpy.read_methods`): each method forwards to the store
(:mod:`rushpy.store.admin`) or to :mod:`rushpy.archive`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rushpy.archive import ArchiveSummary, export_network, import_network
from rushpy.errors import ConfigError
from rushpy.session import Session
from rushpy.store.admin import server_info, set_save_policy

__all__ = ["InspectMethods"]


class InspectMethods:
    """Persistence and inspection of a network's server; the owner sets ``_session``."""

    _session: Session

    async def snapshot_schedule(
        self, seconds: int | Sequence[tuple[int, int]] | None, changes: int = 1
    ) -> None:
        """Set the server's snapshot (RDB save) policy: save every ``seconds`` if ``changes`` keys changed.

        Persistence is the server's, for every network on it: without it, a
        restart loses every task. Pass a list of ``(seconds, changes)`` rules
        for several (Redis's default is ``[(3600, 1), (300, 100), (60, 10000)]``),
        or ``None`` to turn snapshots off. The append-only file
        (``appendonly yes``) is the more durable choice; see ``docs/guide.md``.

        Raises:
            ConfigError: ``seconds`` or ``changes`` is not a positive integer.
            ServerError: the server does not allow ``CONFIG SET`` to this client
                (the message names the line to put in its configuration file).

        """
        rules: list[Any]
        if seconds is None:
            rules = []
        elif isinstance(seconds, int) and not isinstance(seconds, bool):
            rules = [(seconds, changes)]
        elif isinstance(seconds, Sequence):
            rules = [tuple(rule) for rule in seconds]
        else:
            raise ConfigError(f"invalid seconds={seconds!r}: pass whole seconds, a list of rules or None")
        for rule in rules:
            if len(rule) != 2 or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in rule
            ):
                raise ConfigError(
                    f"invalid snapshot rule {rule!r}: use whole seconds >= 1 and changes >= 1, "
                    "e.g. snapshot_schedule(300, 10)"
                )
        await set_save_policy(self._session.store.workers, rules)

    async def redis_info(self) -> dict[str, dict[str, Any]]:
        """The server's ``INFO``, by section (``server``, ``memory``, ``persistence``, ...).

        Values as the server reports them (``INFO`` never shows a password); a
        section the server refuses to this client (an ACL user denied ``INFO``)
        is left out.
        """
        return await server_info(self._session.store.workers)

    async def export_network(self, path: str | Path) -> ArchiveSummary:
        """Write the whole network to one file, chunk by chunk.

        The file holds the tasks with their states, inputs, results, conditions
        and attempts; the workers; the constants and large objects. A name
        ending in ``.gz`` compresses it. See :mod:`rushpy.archive` for the format.
        """
        return await export_network(self._session.store, path)

    async def import_network(self, path: str | Path, *, merge: bool = False) -> ArchiveSummary:
        """Load a file written by :meth:`export_network` into this network.

        Finished and failed tasks keep their state; queued and running tasks are
        queued again (no worker runs them here); workers keep their state, a
        running one becomes ``lost``. Start arguments are never imported (they
        name code to run): start workers with ``fun=``.

        Args:
            path: The archive.
            merge: Import into a network that has tasks or workers, skipping
                tasks and workers whose ids exist.

        Raises:
            ConfigError: the file is not a complete archive of this version
                (nothing written), or the network is not empty and ``merge`` is false.

        """
        return await import_network(self._session.store, path, merge=merge)
