"""Many workers on one network: utilisation with 1 s tasks, and the CPU it costs (issue 12).

Run from the repository root::

    .venv/bin/python -m benchmarks.thousand [--workers 1000] [--processes 8] [--rounds 3] [--quick]

On a private embedded server it starts ``--processes`` worker processes of
``--workers / --processes`` workers each (``python -m rushpy.worker
--workers-per-process N``, each worker registered with its own heartbeat, one
sidecar per process), waits until all are registered, and runs two modes:

- **central**: the controller pushes ``workers x rounds`` tasks of
  ``--duration`` seconds at once; workers pop and run them;
- **decentralized**: the same processes run a worker loop instead
  (``benchmarks.funcs:sleeping_loop``): each worker proposes ``rounds`` tasks
  itself, runs each and records it (all start on a signal once every worker
  is registered; see the loop's docstring).

Utilisation is busy worker-seconds (each task's ``finished_at - started_at``,
summed) over available worker-seconds (workers x the time from the first
task's start to the last task's finish), as in rush's paper. It also prints
the CPU seconds the controller, the server and the worker processes used.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import rushpy
from rushpy.table import Table

__all__ = ["ModeFigures", "main", "run_mode"]

REPO = Path(__file__).resolve().parent.parent
TIMEOUT = 600
LOG = Path(os.environ.get("RUSHPY_BENCH_LOG", "/dev/null"))


@dataclass(frozen=True)
class ModeFigures:
    """One mode's outcome."""

    mode: str
    workers: int
    tasks: int
    utilisation: float
    span: float
    controller_cpu: float
    server_cpu: float
    workers_cpu: float


def _cpu_of(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def utilisation(table: Table, n_workers: int) -> tuple[float, float]:
    """(busy / available worker-seconds, span in seconds) of the tasks in ``table`` but the start signal."""
    signal = table["start"] if "start" in table.columns else [None] * len(table)
    times = zip(table["started_at"], table["finished_at"], signal, strict=True)
    ran = [(s, e) for s, e, is_signal in times if is_signal is None]
    starts, ends = [s for s, _ in ran], [e for _, e in ran]
    busy = sum((end - start).total_seconds() for start, end in ran)
    span = (max(ends) - min(starts)).total_seconds()
    return busy / (n_workers * span), span


def _spawn(config: rushpy.RedisConfig, args: list[str], log: Path | None = None) -> subprocess.Popen[bytes]:
    env = {**os.environ, "RUSHPY_REDIS_URL": config.to_url(include_password=True)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO), env.get("PYTHONPATH", "")] if p)
    command = [sys.executable, "-m", "rushpy.worker", *args]
    if log is None:
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL)
    with open(log, "ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)


async def run_mode(
    server: rushpy.EmbeddedServer,
    mode: str,
    *,
    n_workers: int,
    n_processes: int,
    rounds: int,
    duration: float,
) -> ModeFigures:
    """Start the workers, run one mode, stop them; the figures."""
    network_id = f"thousand-{uuid.uuid4().hex[:8]}"
    per_process = n_workers // n_processes
    what = ["--fun", "benchmarks.funcs:async_sleep"]
    if mode == "decentralized":
        what = ["--worker-loop", "benchmarks.funcs:sleeping_loop"]
        what += ["--loop-arg", f"rounds={rounds}", "--loop-arg", f"duration={duration}"]
    args = ["--network", network_id, *what, "--workers-per-process", str(per_process)]
    args += ["--heartbeat-period", "10", "--log-level", "error"]
    async with rushpy.Controller(network_id, config=server.config, shutdown_timeout=30) as rush:
        procs: list[subprocess.Popen[bytes]] = []
        try:
            if mode == "central":  # the tasks wait for the workers, who start popping as they come
                procs = [_spawn(server.config, args) for _ in range(n_processes)]
                await rush.wait_for_workers(per_process * n_processes, timeout=TIMEOUT)
                cpu = (_self_cpu(), _cpu_of(server.pid or 0), sum(_cpu_of(p.pid) for p in procs))
                keys = await rush.push_tasks(
                    [{"x": i, "duration": duration} for i in range(n_workers * rounds)]
                )
                table = await rush.wait_for_tasks(keys, timeout=TIMEOUT)
            else:
                procs = [_spawn(server.config, args, LOG) for _ in range(n_processes)]
                await rush.wait_for_workers(per_process * n_processes, timeout=TIMEOUT)
                cpu = (_self_cpu(), _cpu_of(server.pid or 0), sum(_cpu_of(p.pid) for p in procs))
                # The start signal: one task per worker, which each loop pops (blocking) and records.
                n_signals = per_process * n_processes
                await rush.push_tasks([{"start": 1}] * n_signals)
                deadline = time.monotonic() + TIMEOUT
                while await rush.n_finished_tasks() < n_signals * (rounds + 1):
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{mode}: not every task finished within {TIMEOUT} s")
                    await asyncio.sleep(0.5)
                table = await rush.fetch_finished_tasks()
            used = (_self_cpu(), _cpu_of(server.pid or 0), sum(_cpu_of(p.pid) for p in procs))
            busy, span = utilisation(table, per_process * n_processes)
            await rush.stop_workers()
            for proc in procs:
                proc.wait(60)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
            await rush.reset(workers=True)
    spent = [after - before for after, before in zip(used, cpu, strict=True)]
    # The start signals of the decentralized mode are not tasks of the study.
    n_tasks = sum(v is None for v in table["start"]) if "start" in table.columns else len(table)
    return ModeFigures(mode, per_process * n_processes, n_tasks, busy, span, *spent)


def main(argv: list[str] | None = None) -> None:
    """Print one line of figures per mode."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.thousand", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--workers", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="tasks per worker")
    parser.add_argument("--duration", type=float, default=1.0, help="seconds per task")
    parser.add_argument("--quick", action="store_true", help="20 workers in 2 processes, 0.2 s tasks")
    parser.add_argument("--modes", default="central,decentralized", help="comma-separated")
    args = parser.parse_args(argv)
    if args.quick:
        args.workers, args.processes, args.rounds, args.duration = 20, 2, 2, 0.2
    with rushpy.EmbeddedServer() as server:
        for mode in args.modes.split(","):
            run = run_mode(
                server,
                mode,
                n_workers=args.workers,
                n_processes=args.processes,
                rounds=args.rounds,
                duration=args.duration,
            )
            f = asyncio.run(run)
            print(
                f"{f.mode:>13}: {f.workers} workers, {f.tasks} tasks of {args.duration:g} s: "
                f"utilisation {100 * f.utilisation:.1f} % over {f.span:.2f} s; CPU s: controller "
                f"{f.controller_cpu:.1f}, server {f.server_cpu:.1f}, workers {f.workers_cpu:.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
