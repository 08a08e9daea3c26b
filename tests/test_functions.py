"""Naming worker functions by import path and resolving them again."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rushpy import WorkerFunctionError
from rushpy.functions import function_path, is_async_function, resolve_function
from tests import funcs
from tests.funcs import async_square, square

ROOT = Path(__file__).resolve().parent.parent


def _python(args: list[str], cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(ROOT), env.get("PYTHONPATH", "")] if p)
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class Holder:
    """A class with callables in it."""

    @staticmethod
    def static(x: int) -> dict[str, int]:
        return {"y": x}

    class Inner:
        @staticmethod
        def deep(x: int) -> dict[str, int]:
            return {"y": -x}


class AsyncCallable:
    async def __call__(self, x: int) -> dict[str, int]:
        return {"y": x}


class SyncCallable:
    def __call__(self, x: int) -> dict[str, int]:
        return {"y": x}


# -- function_path ------------------------------------------------------------------------------


def test_function_path_of_module_functions() -> None:
    assert function_path(square) == "tests.funcs:square"
    assert function_path(async_square) == "tests.funcs:async_square"
    assert function_path(Holder.static) == f"{__name__}:Holder.static"
    assert function_path(Holder.Inner.deep) == f"{__name__}:Holder.Inner.deep"


def test_function_path_round_trips() -> None:
    for fun in (square, async_square, Holder.static, Holder.Inner.deep, os.path.join):
        assert resolve_function(function_path(fun)) is fun


def test_function_path_of_string_is_checked_and_kept() -> None:
    assert function_path("pkg.mod:fun") == "pkg.mod:fun"
    assert function_path("/some/file.py:fun") == "/some/file.py:fun"
    assert function_path("C:/dir/file.py:fun") == "C:/dir/file.py:fun"


@pytest.mark.parametrize("path", ["square", "tests.funcs:", ":square", ""])
def test_function_path_of_bad_string(path: str) -> None:
    with pytest.raises(WorkerFunctionError) as info:
        function_path(path)
    assert repr(path) in str(info.value)
    assert "module:function" in str(info.value)


def test_function_path_lambda() -> None:
    with pytest.raises(WorkerFunctionError, match="lambda"):
        function_path(lambda x: {"y": x})


def test_function_path_nested_function() -> None:
    def nested(x: int) -> dict[str, int]:
        return {"y": x}

    with pytest.raises(WorkerFunctionError) as info:
        function_path(nested)
    assert "nested" in str(info.value)
    assert "top level" in str(info.value)


def test_function_path_partial() -> None:
    with pytest.raises(WorkerFunctionError):
        function_path(functools.partial(square, 2))


def test_function_path_not_callable() -> None:
    with pytest.raises(WorkerFunctionError, match="42"):
        function_path(42)  # type: ignore[arg-type]


def test_function_path_in_script_run_as_main(tmp_path: Path) -> None:
    script = tmp_path / "my_objective.py"
    script.write_text(
        textwrap.dedent(
            """
            from rushpy.functions import function_path, resolve_function

            def objective(x):
                return {"y": x + 1}

            class Box:
                @staticmethod
                def method(x):
                    return {"y": x}

            if __name__ == "__main__":
                print(function_path(objective))
                print(function_path(Box.method))
            """
        )
    )
    other_dir = tmp_path / "elsewhere"
    other_dir.mkdir()
    # Run it by a relative path from another directory: the path printed must
    # still be absolute so that workers with another cwd find it.
    result = _python(["../my_objective.py"], cwd=other_dir)
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.split()
    assert first == f"{script.resolve()}:objective"
    assert second == f"{script.resolve()}:Box.method"
    fun = resolve_function(first)
    assert fun(1) == {"y": 2}
    assert resolve_function(second)(3) == {"y": 3}


def test_function_path_in_script_without_file() -> None:
    # `python -c` has no script file: there is nothing a worker could import.
    code = textwrap.dedent(
        """
        from rushpy.functions import function_path
        from rushpy import WorkerFunctionError
        def f(x):
            return x
        try:
            print("PATH", function_path(f))
        except WorkerFunctionError as exc:
            print("ERROR", exc)
        """
    )
    result = _python(["-c", code], cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ERROR"), result.stdout
    assert "'f'" in result.stdout


def test_function_path_in_stdin_script() -> None:
    # `python - < script` names its __file__ '<stdin>', which is no file either.
    code = textwrap.dedent(
        """
        from rushpy.functions import function_path
        from rushpy import WorkerFunctionError
        def f(x):
            return x
        try:
            print("PATH", function_path(f))
        except WorkerFunctionError as exc:
            print("ERROR", exc)
        """
    )
    result = _python(["-"], cwd=ROOT, stdin=code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ERROR"), result.stdout


# -- resolve_function ---------------------------------------------------------------------------


def test_resolve_module_function() -> None:
    assert resolve_function("tests.funcs:square") is square
    assert resolve_function("tests.funcs:square")(3) == {"y": 9}
    assert resolve_function(f"{__name__}:Holder.Inner.deep") is Holder.Inner.deep
    assert resolve_function("os.path:join") is os.path.join


def test_resolve_callable_instance(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(funcs, "callable_object", SyncCallable(), raising=False)
    assert resolve_function("tests.funcs:callable_object") is funcs.callable_object  # type: ignore[attr-defined]


def _write_module(tmp_path: Path, body: str, name: str | None = None) -> Path:
    file = tmp_path / f"{name or 'user_' + uuid.uuid4().hex[:8]}.py"
    file.write_text(textwrap.dedent(body))
    return file


def test_resolve_file_function(tmp_path: Path) -> None:
    marker = tmp_path / "main_block_ran"
    file = _write_module(
        tmp_path,
        f"""
        from pathlib import Path

        def objective(x):
            return {{"y": 2 * x}}

        if __name__ == "__main__":
            Path({str(marker)!r}).write_text("ran")
            raise SystemExit("the main block must not run")
        """,
    )
    fun = resolve_function(f"{file}:objective")
    assert fun(4) == {"y": 8}
    assert not marker.exists()
    assert fun.__module__ != "__main__"


def test_resolve_relative_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_module(tmp_path, "def f(x):\n    return {'y': x}\n", name="relative_mod")
    monkeypatch.chdir(tmp_path)
    assert resolve_function("relative_mod.py:f")(5) == {"y": 5}
    assert resolve_function("./relative_mod.py:f")(6) == {"y": 6}


def test_resolve_two_files_with_the_same_name(tmp_path: Path) -> None:
    one = tmp_path / "a"
    two = tmp_path / "b"
    one.mkdir()
    two.mkdir()
    _write_module(one, "def f():\n    return 1\n", name="objective")
    _write_module(two, "def f():\n    return 2\n", name="objective")
    f1 = resolve_function(f"{one / 'objective.py'}:f")
    f2 = resolve_function(f"{two / 'objective.py'}:f")
    assert (f1(), f2()) == (1, 2)


def test_resolve_missing_module() -> None:
    with pytest.raises(WorkerFunctionError) as info:
        resolve_function("no_such_module_rushpy_xyz:fun")
    assert "no_such_module_rushpy_xyz" in str(info.value)
    assert "ModuleNotFoundError" in str(info.value)


def test_resolve_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.py"
    with pytest.raises(WorkerFunctionError) as info:
        resolve_function(f"{missing}:fun")
    assert str(missing) in str(info.value)
    assert "does not exist" in str(info.value)


def test_resolve_missing_attribute() -> None:
    with pytest.raises(WorkerFunctionError) as info:
        resolve_function("tests.funcs:no_such_function")
    assert "no_such_function" in str(info.value)
    assert "tests.funcs" in str(info.value)


def test_resolve_missing_nested_attribute() -> None:
    with pytest.raises(WorkerFunctionError, match=r"Holder\.Nope"):
        resolve_function(f"{__name__}:Holder.Nope")


def test_resolve_not_callable() -> None:
    with pytest.raises(WorkerFunctionError) as info:
        resolve_function("tests.funcs:os")
    assert "not callable" in str(info.value)
    with pytest.raises(WorkerFunctionError, match="not callable"):
        resolve_function("tests.test_functions:ROOT")


def test_resolve_file_that_fails_to_import(tmp_path: Path) -> None:
    file = _write_module(tmp_path, "raise RuntimeError('broken module')\n")
    with pytest.raises(WorkerFunctionError) as info:
        resolve_function(f"{file}:f")
    assert "RuntimeError" in str(info.value)
    assert "broken module" in str(info.value)


def test_resolve_module_that_fails_to_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"broken_{uuid.uuid4().hex[:8]}"
    _write_module(tmp_path, "import no_such_dependency_xyz\n", name=name)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(WorkerFunctionError, match="no_such_dependency_xyz"):
        resolve_function(f"{name}:f")


@pytest.mark.parametrize("path", ["nocolon", "mod:", ":fun"])
def test_resolve_bad_path(path: str) -> None:
    with pytest.raises(WorkerFunctionError, match="invalid function path"):
        resolve_function(path)


# -- is_async_function --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fun", "expected"),
    [
        (async_square, True),
        (square, False),
        (AsyncCallable(), True),
        (SyncCallable(), False),
        (functools.partial(async_square), True),
        (functools.partial(square), False),
        (len, False),
        (Holder.static, False),
    ],
)
def test_is_async_function(fun: Callable[..., Any], expected: bool) -> None:
    assert is_async_function(fun) is expected


def test_is_async_function_of_resolved_path() -> None:
    assert is_async_function(resolve_function("tests.funcs:async_square"))
    assert not is_async_function(resolve_function("tests.funcs:square"))
