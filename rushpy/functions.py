"""Naming the functions that workers run: import paths, not pickles.

A function is named ``module:qualname`` (``mypkg.objectives:branin``) or
``path/to/file.py:qualname`` (for scripts that are not importable modules).
Resolving never executes a pickle; loading a file runs it as a module named
after the file, so its ``if __name__ == "__main__":`` block stays silent.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rushpy.errors import WorkerFunctionError

__all__ = ["INJECTED", "function_path", "injected_parameters", "is_async_function", "resolve_function"]

INJECTED = ("seed", "rng")
"""Parameters a worker fills in when the function declares them by name: the task's
seed, and a ``numpy.random.Generator`` seeded with it (see :mod:`rushpy.seeds`)."""


def function_path(fun: Callable[..., Any] | str) -> str:
    """The import path under which a worker process can find ``fun``.

    Functions defined in a script run as ``__main__`` are named by the script's
    file path.

    Raises:
        WorkerFunctionError: ``fun`` is a lambda, a nested function, or otherwise
            not reachable by import; the message says how to fix it.

    """
    if isinstance(fun, str):
        _split(fun)
        return fun
    if not callable(fun):
        raise WorkerFunctionError(f"fun={fun!r} is not callable; pass a function or 'module:function'")
    module = getattr(fun, "__module__", None)
    qualname = getattr(fun, "__qualname__", None)
    if not module or not qualname or "<" in qualname:
        raise WorkerFunctionError(
            f"function {fun!r} cannot be found by import (lambda or nested function); "
            "define it at the top level of a module"
        )
    if module == "__main__":
        main_file = getattr(sys.modules["__main__"], "__file__", None)
        if not main_file or not Path(main_file).is_file():
            raise WorkerFunctionError(
                f"function {qualname!r} lives in an interactive session; define it in a module "
                "file and pass it or 'module:function'"
            )
        return f"{Path(main_file).resolve()}:{qualname}"
    return f"{module}:{qualname}"


def _split(path: str) -> tuple[str, str]:
    module, sep, qualname = path.rpartition(":")
    if not sep or not module or not qualname:
        raise WorkerFunctionError(
            f"invalid function path {path!r}: use 'module:function' or 'file.py:function'"
        )
    return module, qualname


def resolve_function(path: str) -> Callable[..., Any]:
    """Import and return the function named by ``path``.

    Raises:
        WorkerFunctionError: the module or attribute cannot be found, or is not callable.

    """
    module_name, qualname = _split(path)
    try:
        if module_name.endswith(".py") or "/" in module_name:
            file = Path(module_name)
            if not file.is_file():
                raise WorkerFunctionError(f"function file {module_name!r} does not exist")
            name = f"rushpy_user_{file.stem}"
            spec = importlib.util.spec_from_file_location(name, file)
            if spec is None or spec.loader is None:
                raise WorkerFunctionError(f"cannot load {module_name!r} as a Python module")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except WorkerFunctionError:
        raise
    except Exception as exc:
        raise WorkerFunctionError(
            f"cannot import {module_name!r} for function {path!r}: {type(exc).__name__}: {exc}"
        ) from exc
    target: Any = module
    for part in qualname.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise WorkerFunctionError(
                f"module {module_name!r} has no attribute {qualname!r} (from {path!r})"
            ) from None
    if not callable(target):
        raise WorkerFunctionError(f"{path!r} names {target!r}, which is not callable")
    return target  # type: ignore[no-any-return]


def is_async_function(fun: Callable[..., Any]) -> bool:
    """Whether calling ``fun`` returns a coroutine (``async def``, or a callable object with one)."""
    if inspect.iscoroutinefunction(fun):
        return True
    call = getattr(fun, "__call__", None)  # noqa: B004 - callable objects with async __call__
    return call is not None and inspect.iscoroutinefunction(call)


def injected_parameters(fun: Callable[..., Any]) -> frozenset[str]:
    """Which of :data:`INJECTED` ``fun`` declares by name (``**kwargs`` alone does not count).

    A function whose signature cannot be read (some builtins) declares none.
    """
    try:
        parameters = inspect.signature(fun).parameters
    except (TypeError, ValueError):
        return frozenset()
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return frozenset(n for n in INJECTED if n in parameters and parameters[n].kind in kinds)
