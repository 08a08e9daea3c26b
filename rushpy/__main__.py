"""Entry point of ``python -m rushpy``."""

from rushpy.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
