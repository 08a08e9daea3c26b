"""Workers: the :class:`Worker` class, its default loop, worker loops and its command line.

Run a worker with ``python -m rushpy.worker --network ID``.
"""

from rushpy.store import new_worker_id
from rushpy.worker.core import Worker
from rushpy.worker.loop import run_worker_loop
from rushpy.worker.runner import run_function

__all__ = ["Worker", "new_worker_id", "run_function", "run_worker_loop"]
