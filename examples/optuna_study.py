"""An Optuna study whose trials run on rushpy workers, 4 in flight, some of them failing.

The objective is Branin; trials with x1 > 8 raise (a stand-in for a training
run that crashes), and rushpy tells them to Optuna as FAIL. Everything is
plain, blocking code: `rushpy.optuna.optimize_blocking` runs the controller on
an event loop of its own.

Needs the optuna extra: pip install 'rushpy[optuna]'.

Run: python examples/optuna_study.py [--trials 40] [--in-flight 4]
     (uses $RUSHPY_REDIS_URL when it is set, else starts an embedded server)
"""

from __future__ import annotations

import argparse
import math

import optuna
from optuna.distributions import FloatDistribution

import rushpy
import rushpy.optuna

SPACE = {"x1": FloatDistribution(-5.0, 10.0), "x2": FloatDistribution(0.0, 15.0)}
"""The search space of Branin."""


def objective(x1: float, x2: float) -> dict[str, float]:
    """Branin (minimum 0.397887), failing for x1 > 8 like a run that crashes."""
    if x1 > 8:
        raise RuntimeError(f"simulated crash at x1={x1:.3f}")
    a, b, c = 1.0, 5.1 / (4 * math.pi**2), 5 / math.pi
    r, s, t = 6.0, 10.0, 1 / (8 * math.pi)
    return {"value": a * (x2 - b * x1**2 + c * x1 - r) ** 2 + s * (1 - t) * math.cos(x1) + s}


def run(config: rushpy.RedisConfig, network: str, n_trials: int, n_in_flight: int) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=1))
    rushpy.optuna.optimize_blocking(
        study, network, objective, n_trials, config=config, search_space=SPACE, n_in_flight=n_in_flight
    )
    states = [trial.state.name for trial in study.trials]
    counts = {state: states.count(state) for state in sorted(set(states))}
    print(f"{len(study.trials)} trials, {n_in_flight} in flight: {counts}")
    failed = next((t for t in study.trials if t.state.name == "FAIL"), None)
    if failed is not None:
        print(f"a failed trial: {failed.user_attrs.get('rushpy_error')}")
    print(f"best value = {study.best_value:.6f} at {study.best_params} (optimum 0.397887)")
    return study


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40, help="trials to run (default 40)")
    parser.add_argument(
        "--in-flight", type=int, default=4, help="trials in flight, one worker each (default 4)"
    )
    parser.add_argument("--network", default="optuna-study", help="network id (default optuna-study)")
    options = parser.parse_args(argv)
    # Imported here, not at the top: worker processes import this file by path and
    # need only its functions.
    from _server import server_config  # noqa: PLC0415

    with server_config() as config:
        run(config, options.network, options.trials, options.in_flight)


if __name__ == "__main__":
    main()
