"""Keras Tuner's Bayesian optimisation, made to keep up with hundreds of agents.

Keras Tuner's `BayesianOptimizationOracle.populate_space` refits its Gaussian process with 20
optimiser restarts and then runs 50 L-BFGS-B searches of the acquisition function, each with
numerical gradients (one `predict` per dimension per step), on every ask; it also predicts each
trial in flight one at a time. Measured on wine's AutoKeras space: 3.1 s an ask at 100 results
on a quiet machine, growing much faster than the results (benchmarks/search_oracle_cost.py).

What changes here, and nothing else (same kernel, same UCB acquisition with the same beta, same
random start, same space vectorisation):
- the kernel's hyperparameters are fitted on at most `FIT_SAMPLE` results (the best half and a
  seeded random half of the rest), again only when the results grew by `REFIT_GROWTH` since the
  last fit; in between, the process is conditioned on every result with the kernel kept (one
  Cholesky factorisation);
- the acquisition is scored on `CANDIDATES` points at once (uniform over the space, plus
  perturbations of the best results) in one vectorised `predict`, instead of 50 gradient
  searches; the best candidate not tried yet wins (Keras Tuner's own can propose a tried one);
- vectors of finished trials are cached, trials in flight are predicted in one call.
What it costs in search quality: benchmarks/search_oracle_cost.py (docs/benchmarks.md).
"""

from __future__ import annotations

import functools
from typing import Any

FIT_SAMPLE = 256
REFIT_GROWTH = 1.25
CANDIDATES = 2048
LOCAL_SHARE = 0.25  # of the candidates: Gaussian steps around the best results
LOCAL_SCALE = 0.08


@functools.cache
def scalable_class() -> Any:
    """The `ScalableBayesianOracle` class (made on first use: Keras Tuner and numpy are
    imported only by a controller that needs them)."""
    import numpy as np
    from keras_tuner.engine import trial as trial_module
    from keras_tuner.oracles import BayesianOptimizationOracle

    class ScalableBayesianOracle(BayesianOptimizationOracle):  # type: ignore[misc]
        """Keras Tuner's Bayesian oracle whose ask costs little more at 1,000 results."""

        _kernel: Any = None
        _fitted_at = 0
        _vectors: dict[str, Any] | None = None

        def populate_space(self, trial_id: str) -> dict[str, Any]:
            completed = [t for t in self.trials.values() if t.status == "COMPLETED"]
            dimensions = len(self.hyperparameters.space)
            if len(completed) < (self.num_initial_points or max(3 * dimensions, 3)):
                return self._random_populate_space()  # type: ignore[no-any-return]
            x, y = self._vectorize_trials()
            x = np.nan_to_num(x, posinf=0, neginf=0)
            y = np.nan_to_num(y, posinf=0, neginf=0)
            self._fit(x, y)
            candidates = self._candidates(x, y)
            mu, sigma = self.gpr.predict(candidates, return_std=True)
            for index in np.argsort(mu - self.beta * sigma)[:64]:
                values = self._vector_to_values(candidates[index])
                if not self._duplicate(values):
                    return {"status": trial_module.TrialStatus.RUNNING, "values": values}
            return self._random_populate_space()  # type: ignore[no-any-return]

        def _fit(self, x: Any, y: Any) -> None:
            import sklearn.gaussian_process as gp

            n = len(x)
            if self._kernel is None or n >= self._fitted_at * REFIT_GROWTH:
                rng = np.random.RandomState((self.seed or 0) + n)
                if n > FIT_SAMPLE:
                    order = np.argsort(y)  # y is "lower is better"
                    best = order[: FIT_SAMPLE // 2]
                    rest = rng.choice(
                        order[FIT_SAMPLE // 2 :], FIT_SAMPLE - len(best), replace=False
                    )
                    sample = np.concatenate([best, rest])
                else:
                    sample = np.arange(n)
                first = self._kernel is None
                fitter = gp.GaussianProcessRegressor(
                    kernel=gp.kernels.Matern(nu=2.5) if first else self._kernel,
                    n_restarts_optimizer=2 if first else 0,
                    normalize_y=True,
                    alpha=self.alpha,
                    random_state=self.seed,
                )
                fitter.fit(x[sample], y[sample])
                self._kernel, self._fitted_at = fitter.kernel_, n
            self.gpr = gp.GaussianProcessRegressor(
                kernel=self._kernel, optimizer=None, normalize_y=True, alpha=self.alpha
            )
            self.gpr.fit(x, y)

        def _candidates(self, x: Any, y: Any) -> Any:
            bounds = self._get_hp_bounds()
            low, high = bounds[:, 0], bounds[:, 1]
            local = int(CANDIDATES * LOCAL_SHARE)
            uniform = self._random_state.uniform(low, high, size=(CANDIDATES - local, len(low)))
            best = x[np.argsort(y)[: max(1, min(8, len(x)))]]
            centres = best[self._random_state.randint(0, len(best), size=local)]
            steps = self._random_state.normal(0.0, LOCAL_SCALE, size=centres.shape)
            return np.vstack([uniform, np.clip(centres + steps, low, high)])

        def _vectorize_trials(self) -> tuple[Any, Any]:
            if self._vectors is None:
                self._vectors = {}
            space = self._nonfixed_space()
            ongoing = {t.trial_id for t in self.ongoing_trials.values()}
            x: list[list[float]] = []
            y: list[float] = []
            pending: list[int] = []
            for trial in self.trials.values():
                if trial.status in ("FAILED", "INVALID") and trial.trial_id not in ongoing:
                    continue
                key = f"{trial.trial_id}:{len(space)}"
                vector = self._vectors.get(key)
                if vector is None:
                    vector = self._vector_of(trial, space)
                    if trial.trial_id not in ongoing:  # a finished trial's values never change
                        self._vectors[key] = vector
                if trial.trial_id in ongoing:
                    pending.append(len(x))
                    score = 0.0
                elif trial.status == "COMPLETED":
                    score = -trial.score if self.objective.direction == "max" else trial.score
                else:
                    continue
                x.append(vector)
                y.append(score)
            xs, ys = np.array(x), np.array(y, dtype=float)
            if pending and getattr(self.gpr, "X_train_", None) is not None:
                # As Keras Tuner does: a trial in flight counts as its predicted mean plus one
                # standard deviation (pessimistic), so the next candidate looks elsewhere.
                mean, std = self.gpr.predict(xs[pending], return_std=True)
                ys[pending] = np.asarray(mean).ravel() + np.asarray(std).ravel()
            elif pending:
                keep = np.setdiff1d(np.arange(len(xs)), pending)
                xs, ys = xs[keep], ys[keep]
            return xs, ys

        @staticmethod
        def _vector_of(trial: Any, space: list[Any]) -> list[float]:
            values = trial.hyperparameters
            vector = []
            for hp in space:
                value = (
                    values.values[hp.name]
                    if values.is_active(hp) and hp.name in values.values
                    else hp.default
                )
                vector.append(hp.value_to_prob(value))
            return vector

    return ScalableBayesianOracle


def scalable(oracle: Any) -> Any:
    """The same oracle as a `ScalableBayesianOracle` when it is Keras Tuner's Bayesian one
    (every attribute kept: space, trials, seed, project folder), else `oracle` itself."""
    from keras_tuner.oracles import BayesianOptimizationOracle

    faster = scalable_class()
    if not isinstance(oracle, BayesianOptimizationOracle) or isinstance(oracle, faster):
        return oracle
    made = faster.__new__(faster)
    made.__dict__.update(oracle.__dict__)
    return made
