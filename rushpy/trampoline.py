"""The worker function of :class:`rushpy.Executor`: runs the call a task names.

Local workers of an Executor run ``--fun rushpy.trampoline:run``. A task's
inputs name the callable and its arguments, in one of two forms:

- by name: ``{"fn": "module:qualname", "mac": ..., "calls": [[args, kwargs], ...]}``;
  the name must be signed with the worker's key (see :mod:`rushpy.pickling`) or
  lie in a module of ``RUSHPY_ALLOW_MODULES``, and the arguments are msgpack
  values; the results come back as ``{"results": [...]}``;
- pickled (only where the worker's operator opted in with ``--allow-pickle`` or
  ``RUSHPY_ALLOW_PICKLE=1``): ``{"pickle": bytes, "mac": ...}``, a signed
  cloudpickle of ``(fn, calls)``; the results come back pickled and signed,
  ``{"result_pickle": bytes, "result_mac": ...}``.

A task holds one call (``submit``) or a chunk of calls (``map(chunksize=n)``).
A refused payload fails its task with an ``UntrustedCodeError`` before any of
its code is imported or unpickled. An exception of the callable fails the task
with its type, message and traceback, which the Executor re-raises.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rushpy.errors import TaskError, UntrustedCodeError
from rushpy.functions import resolve_function
from rushpy.pickling import ENV_ALLOW_PICKLE, dumps, loads, pickle_allowed, verify
from rushpy.signing import ENV_ALLOW_MODULES, ENV_SIGNING_KEY, StartArgsPolicy, configured_key

__all__ = ["TRAMPOLINE", "run"]

TRAMPOLINE = "rushpy.trampoline:run"
"""The import path of :func:`run`, as given to workers with ``--fun``."""


def _run_calls(fun: Callable[..., Any], calls: Any) -> list[Any]:
    if not isinstance(calls, Sequence) or isinstance(calls, (str, bytes)):
        raise TaskError(f"calls={calls!r:.80} is not a list of [args, kwargs] pairs")
    results = []
    for call in calls:
        if not (isinstance(call, Sequence) and len(call) == 2 and isinstance(call[1], dict)):
            raise TaskError(f"call {call!r:.80} is not an [args, kwargs] pair")
        args, kwargs = call
        results.append(fun(*args, **kwargs))
    return results


def _by_name(fn: Any, signature: Any, calls: Any) -> dict[str, Any]:
    policy = StartArgsPolicy.from_env()
    signed = isinstance(fn, str) and verify(configured_key(), fn.encode(), signature, "function")
    if not signed and not policy.allows_module(fn):
        raise UntrustedCodeError(
            f"refusing to run {fn!r}: the name is not signed with this worker's key and its module is "
            f"not allowed; give the worker the Executor's secret in {ENV_SIGNING_KEY} or allow the "
            f"module with {ENV_ALLOW_MODULES}"
        )
    return {"results": _run_calls(resolve_function(fn), calls)}


def _pickled(data: Any, signature: Any) -> dict[str, Any]:
    if not pickle_allowed():
        raise UntrustedCodeError(
            "refusing a pickled callable: this worker does not accept pickles; start it with "
            f"--allow-pickle (or {ENV_ALLOW_PICKLE}=1) and the Executor's secret in {ENV_SIGNING_KEY}"
        )
    key = configured_key()
    fun, calls = loads(data, signature, key, "call")
    assert key is not None  # loads() refuses without a key
    result, result_mac = dumps(_run_calls(fun, calls), key, "result")
    return {"result_pickle": result, "result_mac": result_mac}


def run(
    fn: str | None = None,
    calls: Any = None,
    mac: str | None = None,
    pickle: bytes | None = None,
    **_constants: Any,
) -> dict[str, Any]:
    """Run the call(s) of one Executor task (see the module docstring for the forms).

    Args:
        fn: Import path of the callable (by-name form).
        calls: ``[[args, kwargs], ...]`` (by-name form).
        mac: Signature of ``fn`` or of ``pickle``.
        pickle: Signed cloudpickle of ``(fn, calls)`` (pickled form).
        **_constants: The network's constants, passed to every worker function; unused.

    Returns:
        ``{"results": [...]}``, or ``{"result_pickle": ..., "result_mac": ...}`` for a pickle.

    Raises:
        UntrustedCodeError: the payload is not signed with this worker's key (nor
            allowed by module), or a pickle came to a worker that did not opt in.
        TaskError: the task is not an Executor task.
        Exception: whatever the callable raised.

    """
    if pickle is not None:
        return _pickled(pickle, mac)
    if fn is None:
        raise TaskError("not an Executor task: its inputs name neither 'fn' nor 'pickle'")
    return _by_name(fn, mac, calls)
