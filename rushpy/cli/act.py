"""Commands that change a network: ``stop``, ``cancel``, ``retry``, ``reset``, ``export``, ``import``."""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from typing import Any

from rushpy.cli.common import ERROR, add_network_arguments, open_network
from rushpy.cli.output import Output
from rushpy.errors import ConfigError

__all__ = ["COMMANDS", "add_parsers"]


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the commands of this module to ``rushpy``'s subparsers."""
    p = sub.add_parser("stop", help="stop workers: terminate (after their tasks) or --kill (at once)")
    add_network_arguments(p)
    p.add_argument("--kill", action="store_true", help="stop at once; their running tasks fail or go back")
    p.add_argument(
        "--worker", action="append", help="only this worker (repeatable; default: every running one)"
    )
    p = sub.add_parser("cancel", help="cancel queued or running tasks")
    add_network_arguments(p)
    p.add_argument("keys", nargs="+", metavar="KEY", help="keys of the tasks")
    p = sub.add_parser("retry", help="put failed tasks back in the queue")
    add_network_arguments(p)
    p.add_argument("keys", nargs="*", metavar="KEY", help="keys of failed tasks")
    p.add_argument("--all-failed", action="store_true", help="every failed task of the network")
    p.add_argument(
        "--ignore-max-retries",
        action="store_true",
        help="also tasks whose attempts are used up (max_retries reached)",
    )
    p = sub.add_parser("reset", help="delete a network's tasks (and workers)")
    add_network_arguments(p)
    p.add_argument("--keep-workers", action="store_true", help="keep the workers' records and logs")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p = sub.add_parser("export", help="write a network to a file (.gz compresses)")
    add_network_arguments(p)
    p.add_argument("file", help="the archive to write")
    p = sub.add_parser("import", help="load a file written by `rushpy export` into a network")
    add_network_arguments(p)
    p.add_argument("file", help="the archive to read")
    p.add_argument(
        "--merge", action="store_true", help="into a network that has tasks, skipping existing ids"
    )


async def _stop(options: argparse.Namespace) -> int:
    out = Output(options.json)
    async with open_network(options) as rush:
        result = await rush.stop_workers("kill" if options.kill else "terminate", worker_ids=options.worker)
    if out.as_json:
        out.json(asdict(result))
    else:
        verb = "killed" if options.kill else "asked to terminate"
        out.line(f"{verb}: {', '.join(result.stopped) or 'none'}")
        if result.not_running:
            out.line(f"not running: {', '.join(result.not_running)}")
        if result.unknown:
            out.line(f"unknown: {', '.join(result.unknown)}")
    return ERROR if result.unknown else 0


async def _cancel(options: argparse.Namespace) -> int:
    out = Output(options.json)
    async with open_network(options) as rush:
        cancelled = await rush.cancel_tasks(options.keys)
    skipped = [k for k in dict.fromkeys(options.keys) if k not in set(cancelled)]
    _report(out, "cancelled", cancelled, skipped, "already finished or failed")
    return 0


async def _retry(options: argparse.Namespace) -> int:
    out = Output(options.json)
    if bool(options.keys) == options.all_failed:
        raise ConfigError("name the failed tasks to retry (KEY ...) or pass --all-failed, not both")
    async with open_network(options) as rush:
        keys = options.keys or (await rush.fetch_failed_tasks())["key"]
        retried = await rush.retry_tasks(keys, ignore_max_retries=options.ignore_max_retries)
    skipped = [k for k in dict.fromkeys(keys) if k not in set(retried)]
    hint = "not failed, or attempts used up (--ignore-max-retries re-queues those)"
    _report(out, "re-queued", retried, skipped, hint)
    return 0


def _report(out: Output, done_as: str, done: list[str], skipped: list[str], why: str) -> None:
    if out.as_json:
        out.json({done_as: done, "skipped": skipped})
        return
    out.line(f"{done_as} {len(done)} task(s)" + (f": {' '.join(done)}" if len(done) <= 20 else ""))
    if skipped:
        out.line(f"skipped {len(skipped)} ({why})" + (f": {' '.join(skipped)}" if len(skipped) <= 20 else ""))


async def _reset(options: argparse.Namespace) -> int:
    out = Output(options.json)
    what = "its tasks" if options.keep_workers else "its tasks, workers and logs"
    async with open_network(options) as rush:
        if not options.yes:
            if not sys.stdin.isatty():
                raise ConfigError(
                    f"reset deletes {what}: pass --yes to confirm (standard input is no terminal)"
                )
            answer = input(f"delete {what} in network {rush.network_id!r}? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                out.line("nothing deleted")
                return 1
        await rush.reset(workers=not options.keep_workers)
    if out.as_json:
        out.json({"reset": rush.network_id, "kept_workers": options.keep_workers})
    else:
        out.line(f"network {rush.network_id}: deleted {what}")
    return 0


async def _export(options: argparse.Namespace) -> int:
    out = Output(options.json)
    async with open_network(options) as rush:
        summary = await rush.export_network(options.file)
    _summary(out, "exported", asdict(summary))
    return 0


async def _import(options: argparse.Namespace) -> int:
    out = Output(options.json)
    # Importing creates the network: it need not exist yet.
    async with open_network(options, must_exist=False) as rush:
        summary = await rush.import_network(options.file, merge=options.merge)
    _summary(out, "imported", asdict(summary))
    return 0


def _summary(out: Output, verb: str, summary: dict[str, Any]) -> None:
    if out.as_json:
        out.json(summary)
        return
    out.line(
        f"{verb} {summary['n_tasks']} task(s) and {summary['n_workers']} worker(s) "
        f"({', '.join(f'{k} {v}' for k, v in summary['states'].items()) or 'no tasks'}): {summary['path']}"
    )


COMMANDS = {
    "stop": _stop,
    "cancel": _cancel,
    "retry": _retry,
    "reset": _reset,
    "export": _export,
    "import": _import,
}
"""Each command's coroutine, by name."""
