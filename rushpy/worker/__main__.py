"""Entry point of ``python -m rushpy.worker`` (the worker command line lives in :mod:`rushpy.cli`)."""

from rushpy.cli import worker_main

if __name__ == "__main__":
    raise SystemExit(worker_main())
