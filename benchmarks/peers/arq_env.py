"""The arq peer's own virtual environment: ``benchmarks/.venv-arq``.

arq pins ``redis<6`` while rushpy needs a newer redis-py, so arq cannot share
the project's environment. Its producer and workers run in a separate virtual
environment instead, driven over a pipe (:mod:`benchmarks.peers.arq_driver`).
Create it once (about 20 s)::

    .venv/bin/python -m benchmarks.peers.arq_env

The adapter also creates it on first use.
"""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

#: Where the environment lives (ignored by git: benchmarks/.gitignore).
VENV = Path(__file__).resolve().parents[1] / ".venv-arq"
#: What it holds; arq brings its own redis-py < 6.
REQUIREMENT = "arq>=0.26"


def python() -> Path:
    """The environment's interpreter (it may not exist yet: see :func:`ensure`)."""
    return VENV / "bin" / "python"


def ready() -> bool:
    """Whether the environment exists and imports arq."""
    if not python().exists():
        return False
    probe = subprocess.run([str(python()), "-c", "import arq"], capture_output=True, check=False)
    return probe.returncode == 0


def ensure(quiet: bool = True) -> Path:
    """Create the environment and install arq into it unless it is ready; return its interpreter."""
    if ready():
        return python()
    venv.EnvBuilder(with_pip=True, clear=True).create(VENV)
    argv = [str(python()), "-m", "pip", "install", "--disable-pip-version-check", REQUIREMENT]
    if quiet:
        argv.insert(4, "-q")
    subprocess.run(argv, check=True)
    if not ready():
        raise RuntimeError(f"{VENV} was created but cannot import arq; remove it and run again")
    return python()


if __name__ == "__main__":
    print(ensure(quiet=False), file=sys.stderr)
