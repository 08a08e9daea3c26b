"""Workers: the :class:`Worker` class, its default loop and its command line.

Run a worker with ``python -m rushpy.worker --network ID``.
"""

from rushpy.store import new_worker_id
from rushpy.worker.core import Worker
from rushpy.worker.runner import run_function

__all__ = ["Worker", "new_worker_id", "run_function"]
