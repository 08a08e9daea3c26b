"""Every adapter by name, imported only when asked for (peers are optional packages)."""

from __future__ import annotations

import importlib
import importlib.util

from benchmarks.peers.base import Adapter

#: name -> "module:Class", in table order (rushpy first: the ratios are against it).
ADAPTERS = {
    "rushpy": "benchmarks.peers.rushpy_peer:RushpyAdapter",
    "rushpy-sync": "benchmarks.peers.rushpy_peer:RushpySyncAdapter",
    "handwritten": "benchmarks.peers.handwritten:HandwrittenAdapter",
    "huey": "benchmarks.peers.huey_peer:HueyAdapter",
    "dramatiq": "benchmarks.peers.dramatiq_peer:DramatiqAdapter",
    "rq": "benchmarks.peers.rq_peer:RqAdapter",
    "celery": "benchmarks.peers.celery_peer:CeleryAdapter",
    "taskiq": "benchmarks.peers.taskiq_peer:TaskiqAdapter",
    "saq": "benchmarks.peers.saq_peer:SaqAdapter",
    "arq": "benchmarks.peers.arq_peer:ArqAdapter",
}

#: What each peer needs installed, checked without importing it.
REQUIRES = {
    "rushpy": ("rushpy",),
    "rushpy-sync": ("rushpy",),
    "handwritten": ("redis",),
    "huey": ("huey",),
    "dramatiq": ("dramatiq",),
    "rq": ("rq",),
    "celery": ("celery",),
    "taskiq": ("taskiq", "taskiq_redis"),
    "saq": ("saq",),
    # arq lives in its own environment (benchmarks/.venv-arq): see available().
    "arq": (),
}

#: How to install a missing peer.
INSTALL_HINT = {"arq": ".venv/bin/python -m benchmarks.peers.arq_env"}
DEFAULT_HINT = "pip install -e '.[bench]'"


def available(name: str) -> bool:
    """Whether every package adapter ``name`` needs is installed (and its module exists)."""
    module = ADAPTERS[name].partition(":")[0]
    needed = (*REQUIRES[name], module)
    if not all(importlib.util.find_spec(package) is not None for package in needed):
        return False
    if name == "arq":
        # arq pins redis < 6: it is installed in its own environment, not in this one.
        from benchmarks.peers import arq_env

        return arq_env.ready()
    return True


def create(name: str) -> Adapter:
    """A new adapter ``name``; raises ``KeyError`` naming the known adapters for an unknown one."""
    if name not in ADAPTERS:
        raise KeyError(f"unknown peer {name!r}; choose from {', '.join(ADAPTERS)}")
    module, _, cls = ADAPTERS[name].partition(":")
    adapter: Adapter = getattr(importlib.import_module(module), cls)()
    return adapter
