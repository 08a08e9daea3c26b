"""scikit-learn's GridSearchCV on rushpy workers through the joblib backend.

The search is ordinary scikit-learn code with `n_jobs=2`; the one rushpy line is
`joblib.parallel_backend("rushpy", ...)`, which runs joblib's batches as tasks
on local rushpy workers (signed cloudpickle payloads: both sides opt in).

Needs the examples and joblib extras: pip install 'rushpy[examples,joblib]'.

Run: python examples/gridsearch.py [--workers 2]
     (uses $RUSHPY_REDIS_URL when it is set, else starts an embedded server)
"""

from __future__ import annotations

import argparse
import time

import joblib
from sklearn.datasets import load_iris
from sklearn.model_selection import GridSearchCV
from sklearn.svm import SVC

import rushpy
import rushpy.joblib  # registers the "rushpy" backend

GRID = {"C": [0.1, 1.0, 10.0, 100.0], "gamma": ["scale", 0.01, 0.1, 1.0], "kernel": ["rbf", "linear"]}


def run(config: rushpy.RedisConfig, network: str, n_workers: int) -> GridSearchCV:
    x, y = load_iris(return_X_y=True)
    search = GridSearchCV(SVC(), GRID, cv=5, n_jobs=n_workers)
    started = time.perf_counter()
    with joblib.parallel_backend("rushpy", network_id=network, n_workers=n_workers, config=config):
        search.fit(x, y)
    elapsed = time.perf_counter() - started
    n_fits = len(search.cv_results_["params"]) * 5
    print(f"{n_fits} fits on {n_workers} rushpy workers in {elapsed:.1f} s")
    print(f"best parameters: {search.best_params_}")
    print(f"best cross-validated accuracy: {search.best_score_:.4f}")
    return search


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2, help="local workers (default 2)")
    parser.add_argument("--network", default="gridsearch", help="network id (default gridsearch)")
    options = parser.parse_args(argv)
    # Imported here, not at the top: worker processes import this file by path and
    # need only its functions.
    from _server import server_config  # noqa: PLC0415

    with server_config() as config:
        run(config, options.network, options.workers)


if __name__ == "__main__":
    main()
