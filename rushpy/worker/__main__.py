"""Entry point of ``python -m rushpy.worker``."""

from rushpy.worker.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
