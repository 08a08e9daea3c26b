"""How ``rushpy`` commands print: tables for people (rich when installed), JSON for scripts (``--json``).

Rich is optional (``pip install 'rushpy[cli]'``): without it tables are
plain aligned text. ``--json`` prints one JSON document per command (one per
line with ``--watch``/``--follow``): times as ISO 8601 strings in UTC, bytes
as text, anything else JSON cannot hold as its ``str``.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Mapping, Sequence
from importlib.util import find_spec
from typing import Any, TextIO

from rushpy.jsonable import to_json

__all__ = ["CELL_WIDTH", "Output", "cell"]

CELL_WIDTH = 60
"""Characters of one table cell at most (longer values are cut with an ellipsis)."""
# Short values kept on one line (an id cut in two cannot be copied); long ones (errors) wrap.
_WHOLE = frozenset({"key", "worker_id", "network", "state", "started_at", "finished_at", "pid"})
_NARROWEST = 12
"""Width below which a column's values are not folded (only longer ones, such as errors, are)."""


def cell(value: Any, width: int | None = CELL_WIDTH) -> str:
    """One value as table text: times to the second, floats to 6 significant digits, cut to ``width``."""
    if value is None:
        text = ""
    elif isinstance(value, dt.datetime):
        utc = value.astimezone(dt.UTC)
        # Today's times by the clock only: tables stay narrow.
        today = utc.date() == dt.datetime.now(dt.UTC).date()
        text = utc.strftime("%H:%M:%S" if today and width is not None else "%Y-%m-%d %H:%M:%S")
    elif isinstance(value, float):
        text = f"{value:.6g}"
    elif isinstance(value, (dict, list, tuple)):
        text = to_json(value)
    else:
        text = str(value)
    if width is not None:
        text = text.replace("\n", " ")
    return text if width is None or len(text) <= width else text[: width - 1] + "…"


class Output:
    """Where a command prints.

    Args:
        as_json: Print JSON documents instead of tables.
        stream: The stream (default standard output).

    """

    def __init__(self, as_json: bool = False, stream: TextIO | None = None) -> None:
        self.as_json = as_json
        self.stream = stream if stream is not None else sys.stdout
        self._rich = not as_json and find_spec("rich") is not None

    def json(self, value: Any) -> None:
        """Print ``value`` as one line of JSON."""
        print(to_json(value), file=self.stream, flush=True)

    def clear(self) -> None:
        """Clear the terminal (ANSI: erase the screen, cursor home)."""
        print("\033[2J\033[H", end="", file=self.stream, flush=True)

    def line(self, text: str = "") -> None:
        """Print a line of text."""
        print(text, file=self.stream, flush=True)

    def table(
        self,
        rows: Sequence[Mapping[str, Any]],
        columns: Sequence[str] | Mapping[str, str],
        title: str | None = None,
        width: int | None = CELL_WIDTH,
    ) -> None:
        """Print ``rows`` under ``columns`` (rich, else aligned text), cells cut to ``width``.

        ``columns`` maps each row field to its header, or lists the fields (their own headers).
        """
        headers = dict(columns) if isinstance(columns, Mapping) else {c: c for c in columns}
        texts = [[cell(row.get(c), width) for c in headers] for row in rows]
        columns = list(headers.values())
        if self._rich:
            # Imported only when used: rich is optional.
            from rich import box  # noqa: PLC0415
            from rich.console import Console  # noqa: PLC0415
            from rich.table import Table  # noqa: PLC0415

            table = Table(
                title=title,
                title_justify="left",
                header_style="bold",
                box=box.SIMPLE_HEAD,
                padding=(0, 1),
                pad_edge=False,
            )
            for i, (field, name) in enumerate(headers.items()):
                longest = max([len(name), *(len(row[i]) for row in texts)])
                narrowest = min(longest, max(len(name), _NARROWEST))
                table.add_column(name, overflow="fold", no_wrap=field in _WHOLE, min_width=narrowest)
            for row in texts:
                table.add_row(*row)
            Console(file=self.stream, soft_wrap=False).print(table)
            return
        if title:
            self.line(title)
        widths = [max([len(c), *(len(r[i]) for r in texts)]) for i, c in enumerate(columns)]
        self.line("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
        for row in texts:
            self.line("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())

    def fields(self, values: Mapping[str, Any], title: str | None = None) -> None:
        """Print name/value pairs, one per line (values uncut)."""
        rows = [{"field": name, "value": value} for name, value in values.items()]
        self.table(rows, ["field", "value"], title, width=None)
