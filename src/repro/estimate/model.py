"""PRE: kernel ridge regression of GPU power and time per image, with split-conformal 90% intervals.

Kernel ridge is the model the study's authors used for PRE (del Rey et al., arXiv:2307.05520 v5).
Each target is learnt relative to the GPU, so that a GPU it has not seen starts from its specs
rather than from the watts of the ones it has: power as a fraction of the TDP, and time per image x
the peak FP32 TFLOPS. Both are learnt on their logarithm (standardised), from standardised
`FEATURES`. The kernel (RBF, or linear: polynomial of degree 1) and its `alpha` and `gamma` are chosen
by 5-fold cross-validation on the fitting rows: folds of random runs (`selection="random"`, the
authors' protocol), or of whole configurations, an architecture on a GPU with all its repetitions
(`selection="configuration"`), which favours models that carry over to unseen configurations.

Intervals are split-conformal (Vovk et al.; Lei et al. 2018): a random quarter of the rows is held
out for calibration, the models are fitted on the rest, and the interval half-width, on the log
scale, is the ceil((n + 1) x 0.9)-th smallest absolute log error on the calibration rows. The
interval is therefore multiplicative: [estimate / e^q, estimate x e^q]. Its 90% coverage holds
for jobs exchangeable with the calibration runs: an unseen architecture or GPU is not.

Everything is fitted when asked, in about a second; nothing is pickled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.compose import TransformedTargetRegressor
from sklearn.kernel_ridge import KernelRidge
from sklearn.model_selection import GridSearchCV, GroupKFold, KFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from repro.errors import UserError
from repro.estimate.features import FEATURES

COVERAGE = 0.9
TARGETS: tuple[str, ...] = ("power_w", "ms_per_image")
_KR = "regressor__kernelridge__"
_GRID = [
    {_KR + "kernel": ["rbf"], _KR + "alpha": [1e-3, 1e-2, 1e-1, 1.0], _KR + "gamma": [0.01, 0.03, 0.1, 0.3]},
    {
        _KR + "kernel": ["poly"],
        _KR + "degree": [1],  # degree 2 extrapolated to absurd values on unseen GPUs
        _KR + "coef0": [1.0],
        _KR + "alpha": [1e-2, 1e-1, 1.0, 10.0],
        _KR + "gamma": [0.1, 0.3, 1.0],
    },
]
#: How each target is made relative to the GPU before fitting: (spec column, True: divide, False: multiply).
_RELATIVE_TO: dict[str, tuple[str, bool]] = {
    "power_w": ("tdp_w", True),
    "ms_per_image": ("fp32_tflops", False),
}
SELECTIONS = ("random", "configuration")
_MIN_ROWS = 20


@dataclass(frozen=True)
class Estimator:
    """Fitted models of the two targets, the conformal half-widths and what the fit has seen."""

    models: dict[str, GridSearchCV]  # target -> fitted search (its best_estimator_ predicts)
    features: tuple[str, ...]  # the features that vary in the fitting rows
    constant: dict[str, float]  # features that never varied, with their one value
    ranges: dict[str, tuple[float, float]]  # raw feature -> (min, max) seen
    log_halfwidth: dict[str, float]  # target or "j_per_image" -> conformal q on the log scale
    architectures: frozenset[str]
    gpus: frozenset[str]
    n_calibration: int

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Point estimates and 90% intervals of power (W), ms/image and J/image for each row."""
        x = frame[list(self.features)].to_numpy(dtype=float)
        out = pd.DataFrame(index=frame.index)
        for target in TARGETS:
            out[target] = _absolute(target, self.models[target].predict(x), frame)
        out["j_per_image"] = out["power_w"] * out["ms_per_image"] / 1000.0
        for target in (*TARGETS, "j_per_image"):
            factor = math.exp(self.log_halfwidth[target])
            out[f"{target}_low"] = out[target] / factor
            out[f"{target}_high"] = out[target] * factor
        return out

    def out_of_distribution(self, architecture: str, gpu: str, values: dict[str, float]) -> list[str]:
        """Why a job lies outside what the estimator has seen; empty when it does not."""
        reasons = []
        if architecture not in self.architectures:
            reasons.append(f"unseen architecture {architecture}")
        if gpu not in self.gpus:
            reasons.append(f"unseen GPU {gpu}")
        for name, value in values.items():
            if name in self.ranges:
                low, high = self.ranges[name]
                if not low * (1 - 1e-6) <= value <= high * (1 + 1e-6):
                    seen = f"{low:g}" if low == high else f"{low:g}-{high:g}"
                    reasons.append(f"{name} {value:g} (seen {seen})")
        return reasons


def fit(runs: pd.DataFrame, seed: int = 0, selection: str = "random") -> Estimator:
    """Fit PRE on `runs` (columns of `published_runs`): models on 75%, conformal calibration on 25%.

    Args:
        runs: the runs to learn from.
        seed: for the calibration split and the cross-validation folds.
        selection: how the kernel and its parameters are chosen, one of `SELECTIONS`.

    Raises:
        UserError: too few runs to fit and calibrate, or an unknown selection.
    """
    if selection not in SELECTIONS:
        raise UserError(f"estimate.selection={selection} is not known; use one of {', '.join(SELECTIONS)}")
    if len(runs) < _MIN_ROWS:
        raise UserError(f"only {len(runs)} runs to fit the estimator on; it needs {_MIN_ROWS} or more")
    raw = [name.removeprefix("log_") for name in FEATURES]
    varying = tuple(name for name in FEATURES if runs[name].nunique() > 1)
    constant = {name: float(runs[name].iloc[0]) for name in FEATURES if name not in varying}
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(runs))
    n_cal = max(len(runs) // 4, 1)
    calibration, fitting = runs.iloc[order[:n_cal]], runs.iloc[order[n_cal:]]
    x_fit = fitting[list(varying)].to_numpy(dtype=float)
    configurations = (fitting["architecture"] + "@" + fitting["gpu"]).to_numpy()
    models = {
        target: _search(seed, selection, configurations).fit(x_fit, _relative(target, fitting))
        for target in TARGETS
    }

    x_cal = calibration[list(varying)].to_numpy(dtype=float)
    predicted = {target: _absolute(target, models[target].predict(x_cal), calibration) for target in TARGETS}
    predicted["j_per_image"] = predicted["power_w"] * predicted["ms_per_image"] / 1000.0
    observed = {target: calibration[target].to_numpy(dtype=float) for target in TARGETS}
    observed["j_per_image"] = observed["power_w"] * observed["ms_per_image"] / 1000.0
    halfwidth = {
        target: conformal_quantile(np.abs(np.log(observed[target] / predicted[target])), COVERAGE)
        for target in predicted
    }
    return Estimator(
        models=models,
        features=varying,
        constant=constant,
        ranges={name: (float(runs[name].min()), float(runs[name].max())) for name in raw},
        log_halfwidth=halfwidth,
        architectures=frozenset(runs["architecture"]),
        gpus=frozenset(runs["gpu"]),
        n_calibration=len(calibration),
    )


def conformal_quantile(scores: np.ndarray, coverage: float) -> float:
    """The split-conformal quantile: the ceil((n + 1) x coverage)-th smallest score (inf if n is small)."""
    n = len(scores)
    rank = math.ceil((n + 1) * coverage)
    if rank > n:
        return math.inf
    return float(np.sort(scores)[rank - 1])


def _relative(target: str, frame: pd.DataFrame) -> np.ndarray:
    spec, divide = _RELATIVE_TO[target]
    values, specs = frame[target].to_numpy(dtype=float), frame[spec].to_numpy(dtype=float)
    return values / specs if divide else values * specs


def _absolute(target: str, relative: np.ndarray, frame: pd.DataFrame) -> np.ndarray:
    spec, divide = _RELATIVE_TO[target]
    specs = frame[spec].to_numpy(dtype=float)
    return relative * specs if divide else relative / specs


def _search(seed: int, selection: str, configurations: np.ndarray) -> GridSearchCV:
    log_scale: Pipeline = make_pipeline(
        FunctionTransformer(np.log, inverse_func=np.exp, check_inverse=False), StandardScaler()
    )
    regressor = TransformedTargetRegressor(
        regressor=make_pipeline(StandardScaler(), KernelRidge(kernel="rbf")),
        transformer=log_scale,
        check_inverse=False,
    )
    return GridSearchCV(
        regressor,
        _GRID,
        cv=list(GroupKFold(5).split(configurations, groups=configurations))
        if selection == "configuration" and len(set(configurations)) >= 5
        else KFold(5, shuffle=True, random_state=seed),
        scoring="neg_mean_absolute_percentage_error",
    )
