"""The child process side of :mod:`rushpy.worker.child`.

``python -m rushpy.worker.child_main module:function`` imports the function
once and answers requests (length-prefixed msgpack frames) on stdin/stdout
until stdin closes. Kept apart from :mod:`rushpy.worker.child` so that running
it with ``-m`` never finds it imported already (no runpy warning).
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any, BinaryIO

from rushpy.codec import decode, encode
from rushpy.functions import injected_parameters, resolve_function
from rushpy.lifetime import die_with_parent
from rushpy.models import Condition
from rushpy.seeds import make_rng
from rushpy.worker.capture import capturing
from rushpy.worker.child import HEADER, READY

__all__ = ["main"]


def _read_frame(stream: BinaryIO) -> bytes | None:
    header = stream.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    (size,) = HEADER.unpack(header)
    return stream.read(size)


def main(argv: list[str] | None = None) -> int:
    """Serve requests for one function until stdin closes."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m rushpy.worker.child module:function", file=sys.stderr)
        return 2
    die_with_parent(signal.SIGKILL)  # no orphan when the worker dies
    # Keep the protocol streams for ourselves; the function's prints go to stderr.
    requests = os.fdopen(os.dup(0), "rb")
    replies = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    fun = resolve_function(args[0])
    wants_rng = "rng" in injected_parameters(fun)
    ready = encode([READY])
    replies.write(HEADER.pack(len(ready)) + ready)
    replies.flush()
    while True:
        body = _read_frame(requests)
        if body is None:
            return 0
        kwargs, seed, capture = decode(body)
        with capturing(capture) as captured:
            try:
                if wants_rng and "rng" not in kwargs:
                    kwargs["rng"] = make_rng(seed)
                ys = fun(**kwargs)
                reply: list[Any] = ["ok", ys]
            except Exception as exc:  # the function's failure fails its task; the child goes on
                reply = ["error", Condition.from_exception(exc).to_dict()]
        output = [] if captured is None else [captured.fields()]
        try:
            frame = encode(reply + output)
        except Exception as exc:  # a result msgpack cannot carry fails its task, not the child
            frame = encode(["error", Condition.from_exception(exc).to_dict(), *output])
        replies.write(HEADER.pack(len(frame)) + frame)
        replies.flush()


if __name__ == "__main__":
    sys.exit(main())
