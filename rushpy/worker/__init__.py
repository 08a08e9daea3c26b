"""Workers: the :class:`Worker` class, its default loop and its command line.

Run a worker with ``python -m rushpy.worker --network ID``.
"""

from rushpy.worker.core import Worker, new_worker_id
from rushpy.worker.runner import run_function

__all__ = ["Worker", "new_worker_id", "run_function"]
