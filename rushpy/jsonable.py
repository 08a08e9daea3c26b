"""Values as JSON for people and programs outside Python: the command line's ``--json`` and the dashboard.

Task values are whatever msgpack decoded (numbers, strings, bytes, lists,
maps) plus the datetimes rushpy adds; JSON cannot hold all of them as they
are, so: times become ISO 8601 strings, bytes text (undecodable bytes
replaced), sets and tuples lists, non-finite floats ``null``, anything else
its ``str``.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping
from typing import Any

__all__ = ["jsonable", "to_json"]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def to_json(value: Any) -> str:
    """``value`` as one line of JSON (see the module's notes); non-finite floats become ``null``."""
    return json.dumps(jsonable(value), default=_jsonable, ensure_ascii=False)


def jsonable(value: Any) -> Any:
    """``value`` with non-finite floats replaced by ``None`` (the rest is left to :func:`to_json`)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value
