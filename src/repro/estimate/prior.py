"""A physical prior for any GPU profile: time and power of training from the GPU's specs, six parameters.

For a GPU nobody has measured this job on (a laptop planning `gpu=a100`, a sweep for a cluster), the
kernel ridge of `repro.estimate.model` has nothing to go on. This model says how training spends
time and power, and fits only what the specs cannot say on the study's published runs:

- time per processed image (training and validation images, the study's count) is set by the slowest
  of three limits, combined in quadrature (`_SOFTMAX_P`): a smooth maximum, since they overlap only
  in part:
  - compute: (training FLOPs + `layer_mflop` per layer) / (`efficiency` x the peak TFLOPS at the
    precision used). A training image costs 3 forward passes (forward, and the backward's two
    products), a validation image 1. The per-layer work is what the FLOP count misses and the GPU
    still runs: batch norm, activations, depthwise convolutions at a small share of the peak. It is
    GPU work, not host work: each layer adds 13 us per image on the GTX 750 Ti (NASNet Mobile against
    MobileNet V2), 14 times the 0.9 us it adds on the RTX 3070, as their peaks (1.39 and 20.3 TFLOPS) say;
  - memory: activations x `bytes_per_activation` / the memory bandwidth;
  - host: `host_ms` per image (data loading, augmentation, the framework), the same on every GPU:
    nothing before training says how fast the machine around a GPU is;
- power = idle + (limit - idle) x (1 - exp(-u / `util_scale`)), with u the dense FLOP rate as a share
  of the peak (training FLOPs / (time x peak)): arithmetic is what draws power. A compute-bound VGG16
  draws 90-96% of the limit; a MobileNet V2 waiting on its host or its small layers draws 43-51%, not
  much more than a GPU whose clocks are up and whose arithmetic is idle. Idle is the profile's
  `idle_power_w` where published, else `idle_share` x the limit, fitted: the floor of a GPU that runs
  a job, above a parked GPU's idle. The limit is the profile's `default_power_limit_w`, else its TDP.

The six parameters are fitted on the medians of the study's 12 configurations (an architecture on
a GPU), on the log scale, with a weak pull towards round physical values (`_DEFAULTS`) so that a fit
on few configurations stays physical. The loss is a pseudo-Huber of the log errors (`_HUBER_LOG`):
an error beyond about 20% counts linearly, so that one configuration (the 750 Ti's NASNet Mobile, at
10.7 ms/image) does not set the parameters of every other.

Intervals come from grouped residuals: the prior is refitted with one architecture left out, and
with one GPU left out. They are therefore as wide as the error on an architecture or a GPU the fit
has not seen, not on a repetition of a seen configuration. The study's three GPUs sat in three
different machines, so the GPU-out error includes the host and software; that is what a user on
another machine gets.

- An unseen architecture: the held-out runs' absolute log errors are pooled, and the half-width on
  the log scale is their split-conformal 90% quantile (`conformal_quantile`).
- An unseen GPU (`WIDENED_GROUPINGS`): the largest of the held-out GPUs' own 90% quantiles. A new GPU
  brings one error shared by all its runs (its host, its software), so the calibration sample is the
  GPUs, not the runs; pooling the runs weights a GPU by how often the study ran it. A 90% conformal
  quantile over G groups is the ceil((G + 1) x 0.9)-th smallest, which needs G >= 9; the study has 3
  (2 inside a validation fold). The largest group's quantile is the widest the data can state, not a
  calibrated 90%, and every interval it sets says so (`Prior.widened_note`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd
from omegaconf import OmegaConf
from scipy.optimize import minimize

from repro.config import CONF_DIR, GpuConfig, ModelConfig
from repro.errors import UserError
from repro.estimate.model import COVERAGE, conformal_quantile

#: Spec keys the prior reads from a GPU profile (conf/gpu/*.yaml); None where not published.
PRIOR_SPEC_KEYS: tuple[str, ...] = (
    "tdp_w",
    "default_power_limit_w",
    "fp32_tflops",
    "tf32_tflops",
    "fp16_tflops",
    "bf16_tflops",
    "memory_bandwidth_gbs",
    "idle_power_w",
)
#: The precision a job trains in (`training.amp`, fp32 without it) -> the profile's peak that bounds it.
PEAK_OF_PRECISION: dict[str, str] = {
    "fp32": "fp32_tflops",
    "tf32": "tf32_tflops",
    "fp16": "fp16_tflops",
    "bf16": "bf16_tflops",
}
#: Activations (millions of values, every leaf module's output) and leaf modules of one 128x128 image
#: through this package's versions of the study's networks with the study's heads (`workload_of_model`).
STUDY_ACTIVATIONS_M: dict[str, float] = {
    "mobilenet_v2": 4.421889,
    "nasnet_mobile": 7.91325,
    "xception": 13.019873,
    "resnet50": 10.853377,
    "vgg16": 9.356802,
}
STUDY_LAYERS: dict[str, int] = {
    "mobilenet_v2": 205,
    "nasnet_mobile": 811,
    "xception": 158,
    "resnet50": 195,
    "vgg16": 37,
}
#: The columns a frame needs for `Prior.predict`.
WORKLOAD_COLUMNS: tuple[str, ...] = (
    "gflops", "activations_m", "layers", "batch_size", "train_images", "val_images",
)  # fmt: skip
_SOFTMAX_P = 2.0  # limits combine in quadrature: the larger dominates, the other still adds (partial overlap)
_BYTES_PER_VALUE = 4.0  # FP32
_HUBER_LOG = 0.2  # log error beyond which the loss grows linearly (pseudo-Huber)
_PRIOR_WEIGHT = 0.05  # pull of each log parameter towards its default, against a squared log error


@dataclass(frozen=True)
class PriorParameters:
    """What the specs cannot say, fitted on the published runs."""

    efficiency: float = 0.3  # share of the peak TFLOPS that convolution training reaches
    layer_mflop: float = 10.0  # GPU work per layer per image that the FLOP count misses (MFLOP)
    bytes_per_activation: float = 16.0  # memory traffic per activation value per image (B)
    host_ms: float = 0.3  # host time per image (ms)
    idle_share: float = 0.15  # power of a GPU running a job, arithmetic idle / limit (no idle published)
    util_scale: float = 0.3  # share of the peak at which power reaches 63% of the way from idle to the limit


_DEFAULTS = PriorParameters()


def gpu_specs_for_prior(name: str) -> dict[str, float | None]:
    """The prior's specs of conf/gpu/NAME.yaml (None where the profile has none)."""
    path = CONF_DIR / "gpu" / f"{name}.yaml"
    if not path.is_file():
        raise UserError(f"gpu={name} has no profile in {CONF_DIR / 'gpu'}")
    profile = OmegaConf.load(path)
    return {key: profile.get(key) for key in PRIOR_SPEC_KEYS}


def missing_specs(specs: dict[str, float | None], precision: str = "fp32") -> list[str]:
    """The specs the prior needs and the profile lacks, for a job at `precision`."""
    needed = [PEAK_OF_PRECISION[precision], "memory_bandwidth_gbs", "tdp_w"]
    return [key for key in needed if specs.get(key) is None]


def with_gpu_columns(frame: pd.DataFrame, precision: str = "fp32") -> pd.DataFrame:
    """Add `peak_tflops`, `bandwidth_gbs`, `limit_w` and `idle_w` (NaN: unpublished) from the spec columns."""
    out = frame.copy()
    out["peak_tflops"] = out[PEAK_OF_PRECISION[precision]].astype(float)
    out["bandwidth_gbs"] = out["memory_bandwidth_gbs"].astype(float)
    unknown = pd.Series(np.nan, index=out.index)
    nominal_w = out["tdp_w"].astype(float)
    out["limit_w"] = out.get("default_power_limit_w", unknown).astype(float).fillna(nominal_w)
    out["idle_w"] = out.get("idle_power_w", unknown).astype(float)
    return out


def model_workload(model_cfg: ModelConfig, image_size: int, cache: dict | None = None) -> tuple[float, int]:
    """(activations in millions of values, leaf modules) of one image through the job's network.

    Every leaf module's output counts once: what the forward pass writes and the backward reads. The
    network is built untrained (no weights are read), once per distinct model and image size.
    """
    cache = {} if cache is None else cache
    key = (repr(model_cfg), int(image_size))
    if key not in cache:
        import dataclasses

        import torch

        from repro.models import create_model

        untrained = dataclasses.replace(model_cfg, pretrained=False, weights_file=None)
        model = create_model(untrained, num_classes=1)
        counted = {"values": 0, "layers": 0}

        def count(_module: torch.nn.Module, _inputs: object, output: object) -> None:
            counted["layers"] += 1
            if isinstance(output, torch.Tensor):
                counted["values"] += output.numel()

        leaves = [m for m in model.modules() if next(m.children(), None) is None]
        hooks = [leaf.register_forward_hook(count) for leaf in leaves]
        model.eval()
        try:
            with torch.no_grad():
                model(torch.zeros(1, 3, int(image_size), int(image_size)))
        finally:
            for hook in hooks:
                hook.remove()
        cache[key] = (counted["values"] / 1e6, counted["layers"])
    return cache[key]


def job_frame(gpu_cfg: GpuConfig, workload: dict[str, float], precision: str = "fp32") -> pd.DataFrame:
    """One job as the prior sees it: `WORKLOAD_COLUMNS` and the GPU's columns.

    Raises:
        UserError: the GPU profile lacks a spec the prior needs (it names the key to set).
    """
    specs = {key: getattr(gpu_cfg, key, None) for key in PRIOR_SPEC_KEYS}
    missing = missing_specs(specs, precision)
    if missing:
        raise UserError(
            f"gpu={gpu_cfg.name} lacks the spec(s) {', '.join(missing)} that the prior needs; set them in "
            f"conf/gpu/{gpu_cfg.name}.yaml or on the command line (gpu.{missing[0]}=...)"
        )
    row = {**{key: float(workload[key]) for key in WORKLOAD_COLUMNS}, **specs}
    return with_gpu_columns(pd.DataFrame([row]).astype(float), precision)


def study_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """The published runs (`published_runs`) with the prior's workload and GPU columns."""
    specs = pd.DataFrame([gpu_specs_for_prior(name) for name in runs["gpu"]], index=runs.index, dtype=float)
    out = runs.drop(columns=[c for c in specs.columns if c in runs.columns]).join(specs)
    out["activations_m"] = out["architecture"].map(STUDY_ACTIVATIONS_M).astype(float)
    out["layers"] = out["architecture"].map(STUDY_LAYERS).astype(float)
    return with_gpu_columns(out)


def _column(frame: pd.DataFrame | dict[str, np.ndarray], name: str) -> np.ndarray:
    return np.asarray(frame[name], dtype=float)


def _passes(frame: pd.DataFrame) -> np.ndarray:
    """Forward passes per processed image: 3 for a training image, 1 for a validation image."""
    n_train, n_val = _column(frame, "train_images"), _column(frame, "val_images")
    return (3 * n_train + n_val) / (n_train + n_val)


def _limits_ms(params: PriorParameters, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(compute, memory, host) time per processed image, ms."""
    passes = _passes(frame)
    gflops = _column(frame, "gflops") + params.layer_mflop / 1e3 * _column(frame, "layers")
    compute = passes * gflops / (params.efficiency * _column(frame, "peak_tflops"))
    traffic_gb = passes * _column(frame, "activations_m") * 1e6 * params.bytes_per_activation / 1e9
    memory = traffic_gb / _column(frame, "bandwidth_gbs") * 1e3
    host = np.full_like(compute, params.host_ms)
    return compute, memory, host


def _time_and_power(params: PriorParameters, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    compute, memory, host = _limits_ms(params, frame)
    p = _SOFTMAX_P
    total = (compute**p + memory**p + host**p) ** (1 / p)
    dense_share = _passes(frame) * _column(frame, "gflops") / (total * _column(frame, "peak_tflops"))
    limit = _column(frame, "limit_w")
    idle = _column(frame, "idle_w")
    idle = np.where(np.isnan(idle), params.idle_share * limit, idle)
    power = idle + (limit - idle) * (1 - np.exp(-dense_share / params.util_scale))
    return total, power


TARGETS: tuple[str, ...] = ("power_w", "ms_per_image", "j_per_image")
#: The grouped splits whose residuals calibrate the intervals: held-out column of the runs.
GROUPINGS: dict[str, str] = {"architecture": "architecture", "GPU": "gpu"}
#: Groupings whose half-width is the largest held-out group's 90% quantile (`_group_max_quantiles`):
#: too few groups for a conformal 90% quantile, so the interval is widened beyond what they calibrate.
WIDENED_GROUPINGS: frozenset[str] = frozenset({"GPU"})
WIDENED_NOTE = (
    "interval widened beyond calibration: it has the unseen-GPU width, the largest of the study's GPUs' "
    "held-out 90% errors (3 GPUs, 3 machines: too few for a calibrated 90% interval)"
)


@dataclass(frozen=True)
class Prior:
    """The fitted prior and its half-widths (log scale), calibrated per grouping and target."""

    params: PriorParameters
    log_halfwidth: dict[str, dict[str, float]]  # grouping ("architecture", "GPU") -> target -> q
    widened: frozenset[str] = WIDENED_GROUPINGS  # groupings whose q is wider than their calibration

    def widened_note(self, unseen: frozenset[str]) -> str:
        """What a row's note says when its interval is wider than calibration supports ('' if it is not).

        Neither grouping unseen takes the wider of the two half-widths, so a widened one counts there too.
        """
        used = unseen if unseen else frozenset(GROUPINGS)
        return WIDENED_NOTE if used & self.widened else ""

    def halfwidths(self, unseen: frozenset[str]) -> dict[str, float]:
        """The log half-width of each target for a job whose `unseen` groupings the study never ran.

        One unseen grouping: its own calibrated q. Both: their errors add on the log scale, taken as
        independent, sqrt(q_a^2 + q_g^2). Neither (a study architecture on a study GPU, in another
        setting: data set, batch, image size): the wider of the two; no split tests that case.
        """
        q = self.log_halfwidth
        if len(unseen) == 1:
            return dict(q[next(iter(unseen))])
        if len(unseen) == 2:
            return {t: math.hypot(*(q[g][t] for g in GROUPINGS)) for t in TARGETS}
        return {t: max(q[g][t] for g in GROUPINGS) for t in TARGETS}

    def predict(self, frame: pd.DataFrame, unseen: frozenset[str] = frozenset(GROUPINGS)) -> pd.DataFrame:
        """Point and 90% interval of power (W), ms/image and J/image, as `Estimator.predict` gives them.

        `frame` has `WORKLOAD_COLUMNS` and the columns of `with_gpu_columns`; `unseen` sets the width.
        """
        time_ms, power = _time_and_power(self.params, frame)
        out = pd.DataFrame({"power_w": power, "ms_per_image": time_ms}, index=frame.index)
        out["j_per_image"] = out["power_w"] * out["ms_per_image"] / 1000.0
        for target, q in self.halfwidths(unseen).items():
            out[f"{target}_low"] = out[target] / math.exp(q)
            out[f"{target}_high"] = out[target] * math.exp(q)
        return out


def fit_parameters(runs: pd.DataFrame) -> PriorParameters:
    """Fit the six parameters on `study_frame` rows: pseudo-Huber log errors of the configuration medians."""
    keys = ["architecture", "gpu"]
    columns = [*WORKLOAD_COLUMNS, "peak_tflops", "bandwidth_gbs", "limit_w", "idle_w"]
    medians = runs.groupby(keys, sort=True)[["ms_per_image", "power_w"]].median()
    first = runs.groupby(keys, sort=True)[columns].first()
    specs = {name: first[name].to_numpy(float) for name in columns}  # the loss runs thousands of times
    log_time, log_power = np.log(medians["ms_per_image"].to_numpy()), np.log(medians["power_w"].to_numpy())
    names = [f.name for f in fields(PriorParameters)]
    start = np.log([getattr(_DEFAULTS, n) for n in names])

    def loss(theta: np.ndarray) -> float:
        params = _from_log(theta, names)
        time_ms, power = _time_and_power(params, specs)
        errors = np.concatenate([np.log(time_ms) - log_time, np.log(power) - log_power])
        misfit = np.sum(2 * _HUBER_LOG**2 * (np.sqrt(1 + (errors / _HUBER_LOG) ** 2) - 1))
        return float(misfit + _PRIOR_WEIGHT * np.sum((theta - start) ** 2))

    best = minimize(loss, start, method="L-BFGS-B")
    return _from_log(best.x, names)


def _from_log(theta: np.ndarray, names: list[str]) -> PriorParameters:
    values = dict(zip(names, np.exp(theta), strict=True))
    values["idle_share"] = min(values["idle_share"], 1.0)  # a GPU draws at most its limit
    return PriorParameters(**values)


def grouped_log_errors(runs: pd.DataFrame) -> pd.DataFrame:
    """Each run's log error (prediction / measurement) when its architecture, then its GPU, is left out.

    One row per run and grouping: `grouping`, `held_out`, and `TARGETS`, indexed like `runs`.
    """
    parts = []
    for grouping, column in GROUPINGS.items():
        for held_out in sorted(runs[column].unique()):
            test = runs[column] == held_out
            time_ms, power = _time_and_power(fit_parameters(runs[~test]), runs[test])
            observed = runs[test]
            parts.append(
                pd.DataFrame(
                    {
                        "grouping": grouping,
                        "held_out": held_out,
                        "power_w": np.log(power / observed["power_w"].to_numpy(float)),
                        "ms_per_image": np.log(time_ms / observed["ms_per_image"].to_numpy(float)),
                    },
                    index=observed.index,
                )
            )
    errors = pd.concat(parts)
    errors["j_per_image"] = errors["power_w"] + errors["ms_per_image"]
    return errors


def _quantiles(errors: pd.DataFrame) -> dict[str, float]:
    return {t: conformal_quantile(np.abs(errors[t].to_numpy()), COVERAGE) for t in TARGETS}


def _group_max_quantiles(errors: pd.DataFrame) -> dict[str, float]:
    """The largest of the held-out groups' own 90% quantiles: one group, one draw of the group's error."""
    groups = [part for _, part in errors.groupby("held_out", sort=True)]
    return {t: max(_quantiles(part)[t] for part in groups) for t in TARGETS}


def _halfwidths_of(grouping: str, errors: pd.DataFrame) -> dict[str, float]:
    """The log half-widths of one grouping from the held-out errors of its calibration groups."""
    return _group_max_quantiles(errors) if grouping in WIDENED_GROUPINGS else _quantiles(errors)


def fit_prior(runs: pd.DataFrame) -> Prior:
    """Fit the prior on `study_frame` rows and calibrate its intervals on their grouped residuals.

    Raises:
        UserError: fewer than two architectures and two GPUs, so no grouped residual exists.
    """
    if runs["architecture"].nunique() < 2 or runs["gpu"].nunique() < 2:
        raise UserError("the prior's intervals need runs of two or more architectures and GPUs")
    errors = grouped_log_errors(runs)
    halfwidth = {
        grouping: _halfwidths_of(grouping, errors[errors["grouping"] == grouping]) for grouping in GROUPINGS
    }
    return Prior(params=fit_parameters(runs), log_halfwidth=halfwidth)


def grouped_predictions(runs: pd.DataFrame) -> pd.DataFrame:
    """Out-of-group predictions of every run, with intervals that never saw the run's group.

    For each grouping and held-out group, the point is the fit without that group, and the interval's
    half-width is set by the *other* groups' held-out errors alone (cross-conformal, as in CV+: Barber
    et al. 2021), by the rule `fit_prior` uses (`_halfwidths_of`): the held-out group's own error
    never sets its width. One row per run and grouping: `grouping`, `held_out`, `widened` (the
    interval is wider than its calibration, `WIDENED_GROUPINGS`) and the columns of `Prior.predict`,
    indexed like `runs`.
    """
    errors = grouped_log_errors(runs)
    parts = []
    for grouping in GROUPINGS:
        mine = errors[errors["grouping"] == grouping]
        for held_out, part in mine.groupby("held_out", sort=True):
            q = _halfwidths_of(grouping, mine[mine["held_out"] != held_out])
            observed = runs.loc[part.index]
            out = pd.DataFrame(index=part.index)
            out["power_w"] = observed["power_w"] * np.exp(part["power_w"])
            out["ms_per_image"] = observed["ms_per_image"] * np.exp(part["ms_per_image"])
            out["j_per_image"] = out["power_w"] * out["ms_per_image"] / 1000.0
            for target in TARGETS:
                out[f"{target}_low"] = out[target] / math.exp(q[target])
                out[f"{target}_high"] = out[target] * math.exp(q[target])
            parts.append(
                out.assign(grouping=grouping, held_out=held_out, widened=grouping in WIDENED_GROUPINGS)
            )
    return pd.concat(parts)
