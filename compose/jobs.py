"""The function the compose workers run (replace it with your own package in your image).

Workers name it by file path: ``--fun compose/jobs.py:evaluate`` (from /app in
the image, from the repository root locally).
"""

from __future__ import annotations

import math


def evaluate(x1: float, x2: float) -> dict[str, float]:
    """The Branin function: a stand-in for an expensive evaluation (runs on the workers)."""
    a, b, c = 1.0, 5.1 / (4 * math.pi**2), 5 / math.pi
    r, s, t = 6.0, 10.0, 1 / (8 * math.pi)
    return {"y": a * (x2 - b * x1**2 + c * x1 - r) ** 2 + s * (1 - t) * math.cos(x1) + s}
