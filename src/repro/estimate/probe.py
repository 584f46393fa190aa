"""A probe on this machine: a job's real training step, measured for seconds, projected to the whole run.

`python -m repro.estimate ... estimate.probe=true` builds each distinct job's real pieces (model, head,
preprocessing, data loader, batch and image size, threads, frozen layers) on the device the job would
train on here and drives them through the training loop's own epoch and validation functions
(`repro.loop`), inside the job's own energy meters (`repro.energy`):

1. a short warm-up (unmeasured steps of the head phase, so that caches, allocators and the loader's
   workers are running);
2. `estimate.probe_seconds` of head-only training, then of fine-tuning, each a measured window;
3. one validation pass (at most `estimate.probe_seconds` of it), a measured window.

The steps cycle through the loader in epochs as long as the job's (`training.max_steps_per_epoch`), so
a loader's start-up per epoch is paid as often as in the run. Each phase gives s/image and J/image;
the run is projected as J/image per phase x the images per epoch x the epochs (`project`), and on the CPU
multiplied by the probes' measured bias against full runs (`CPU_FULL_OVER_PROBE`, `device_bias`). The probe
holds the machine-wide measurement lock, writes its meters' files to a temporary folder that it deletes,
and records nothing in MLflow: `repro.stats` and the report never see it.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from repro.config import Config
from repro.errors import UserError

#: Full runs' J/image over the probe's, per architecture, on this project's 2-vCPU VM: the committed
#: paper/estimation/f_probe (`python -m repro.estimate probe-table`, idle machine, 10 s per phase, the five
#: architectures of experiment=replication_cpu against the means of their five full runs in
#: paper/replication/cpu/mlflow.db; 16:05 UTC). The probe read high for four of five architectures. Its
#: definition of J/image, image counts and meters are the full runs' (the README's "Estimating before you
#: train" says what was compared); no accounting cause was found, so a CPU probe is corrected by these
#: ratios (`device_bias`), and `probe-table` validates that correction leaving each architecture out.
#: Regenerating the table prints the new values for this constant; move the old ones into
#: `CPU_EARLIER_FULL_OVER_PROBE`.
CPU_FULL_OVER_PROBE: dict[str, float] = {
    "mobilenet_v2": 0.923, "nasnet_mobile": 0.935, "resnet50": 0.986, "vgg16": 1.023, "xception": 0.946,
}  # fmt: skip
#: The same ratios from earlier idle runs of the table on the same VM, on 2026-12-07 at about 14:05 and
#: 15:52 UTC (the code trained no differently then). A ratio moved by up to 16% from one run to another,
#: more than the five ratios of one run spread, so the CPU band also holds these: an interval must cover
#: how far another day's probe can lie, not only another architecture's.
CPU_EARLIER_FULL_OVER_PROBE: dict[str, tuple[float, ...]] = {
    "mobilenet_v2": (0.866, 0.903), "nasnet_mobile": (0.796, 0.883), "resnet50": (0.842, 0.913),
    "vgg16": (0.936, 0.942), "xception": (0.819, 0.952),
}  # fmt: skip
#: The bias band of a probe on a device without a measured correction (a GPU): full / probe should lie
#: within it. From the CPU probes' lowest ratio to 1: ten probes on one CPU cannot say that a GPU is
#: biased alike, so its point is left as measured and the band reaches down to where the CPU's full runs lay.
BIAS_BAND: tuple[float, float] = (0.796, 1.0)
#: Default seconds of each measured phase.
DEFAULT_PROBE_SECONDS = 10.0
#: Unmeasured warm-up before the head phase: at least this many steps, and this share of probe_seconds.
_WARMUP_STEPS = 2
_WARMUP_SHARE = 0.2
#: The z of a two-sided 90% interval, for the step-to-step spread of the mean step time.
_Z90 = 1.645
_PHASES = ("head", "finetune", "validation")


@dataclass
class PhaseMeasurement:
    """One measured phase of a probe: images, wall time, energy per component and each step's seconds."""

    phase: str
    images: int = 0
    duration_s: float = 0.0
    energy_j: dict[str, float] = field(default_factory=dict)
    step_s: list[float] = field(default_factory=list)
    others_cpu_share: float = math.nan  # of the machine's CPU time, what other processes used meanwhile

    @property
    def s_per_image(self) -> float:
        return self.duration_s / self.images if self.images else math.nan

    @property
    def j_per_image(self) -> float:
        return sum(self.energy_j.values()) / self.images if self.images else math.nan

    @property
    def gpu_j_per_image(self) -> float:
        return self.energy_j["gpu"] / self.images if self.images and "gpu" in self.energy_j else math.nan

    @property
    def spread(self) -> float:
        """Relative half-width of the 90% interval of the mean step time, from the step-to-step spread."""
        steps = np.asarray(self.step_s, dtype=float)
        if len(steps) < 2 or steps.mean() <= 0:
            return 0.0
        return float(_Z90 * steps.std(ddof=1) / math.sqrt(len(steps)) / steps.mean())


@dataclass
class ProbeResult:
    """What one probe measured, and how its meters measured it."""

    device: str
    phases: dict[str, PhaseMeasurement]
    methods: dict[str, str]  # component -> provenance method (e.g. cpu: tdp-load-estimate)
    estimated: bool  # any component's energy is a model, not a reading
    idle_power_w: float | None  # measured only when the job's protocol has a baseline or cooldowns
    warmup_s: float  # the job's energy.warmup_s, .baseline_s and .cooldown_s, for the overheads
    baseline_s: float
    cooldown_s: float

    @property
    def others_cpu_share(self) -> float:
        """The share of the machine's CPU time that other processes used while the probe measured (the
        phases' figures weighted by their durations): a busy machine slows the probe down, and on a CPU
        its energy estimate bills the others' load to the job; NaN where it could not be read."""
        pairs = [(p.others_cpu_share, p.duration_s) for p in self.phases.values() if p.duration_s > 0]
        pairs = [(share, seconds) for share, seconds in pairs if not math.isnan(share)]
        if not pairs:
            return math.nan
        return sum(share * seconds for share, seconds in pairs) / sum(seconds for _, seconds in pairs)

    @property
    def provenance(self) -> str:
        """`measured`, or `estimated (component: method, ...)` naming each component's method."""
        if not self.estimated:
            return "measured"
        return "estimated (" + ", ".join(f"{c}: {m}" for c, m in sorted(self.methods.items())) + ")"


@dataclass(frozen=True)
class BiasCorrection:
    """What a probe's projection is multiplied by: `factor` on the point, `band` (low, high) around it."""

    factor: float
    band: tuple[float, float]


def bias_correction(
    full_over_probe: list[float], earlier: list[float] | tuple[float, ...] = ()
) -> BiasCorrection:
    """The correction that full runs' J/image over their probes' give: their geometric mean, and as band
    the lowest and highest ratio over that mean, of these and of the `earlier` runs' (so the band holds
    every ratio it was taken from, whichever run of the probes it came from)."""
    ratios = np.asarray(full_over_probe, dtype=float)
    every = np.concatenate([ratios, np.asarray(earlier, dtype=float)])
    if len(ratios) == 0 or not np.all(every > 0):
        raise ValueError(f"a bias correction needs positive full/probe ratios, not {list(every)}")
    factor = float(np.exp(np.log(ratios).mean()))
    return BiasCorrection(factor, (float(every.min()) / factor, float(every.max()) / factor))


def device_bias(device: str) -> BiasCorrection:
    """The correction of a probe on `device`: `CPU_FULL_OVER_PROBE`'s on the CPU, where it was measured;
    elsewhere none, with `BIAS_BAND`."""
    if device.split(":")[0] == "cpu":
        earlier = [ratio for ratios in CPU_EARLIER_FULL_OVER_PROBE.values() for ratio in ratios]
        return bias_correction(list(CPU_FULL_OVER_PROBE.values()), earlier)
    return BiasCorrection(1.0, BIAS_BAND)


def parse_probe_seconds(value: str) -> float:
    """`estimate.probe_seconds` as a number of seconds; raise `UserError` unless it is above 0."""
    try:
        seconds = float(value)
    except ValueError:
        raise UserError(f"estimate.probe_seconds={value} is not a number of seconds") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise UserError(f"estimate.probe_seconds={value} must be greater than 0")
    return seconds


def probe_device(cfg: Config) -> tuple[torch.device | None, str]:
    """The device the job would train on here, or None and one line saying why it cannot be probed."""
    from repro.environments import resolve_device

    try:
        return resolve_device(cfg.gpu).torch_device, ""
    except UserError as error:
        here = resolve_device(_auto(cfg)).torch_device
        reason = str(error).split(";")[0]
        return None, f"not probed: {reason}, and this machine trains on {here}; the prior estimates it"


def _auto(cfg: Config):  # noqa: ANN202  (a GpuConfig)
    import dataclasses

    return dataclasses.replace(cfg.gpu, name="auto", device_match=None)


def probe_job(
    cfg: Config, device: torch.device, seconds: float, describe: str, idle_power_w: float | None = None
) -> ProbeResult:
    """Run one job's real training step on `device` for `seconds` per phase, inside its own meters.

    Args:
        describe: how messages name the job (its overrides).
        idle_power_w: the machine's idle power, measured by an earlier probe; measured here (3 s at most)
            when None and the job's protocol has an idle baseline or cooldowns to cost.

    Raises:
        UserError: the job ran out of memory (naming the job, its batch size and the device), or its
            `energy=` measures nothing.
    """
    from repro.data import build_data
    from repro.energy import create_monitor
    from repro.loop import seed_everything
    from repro.models import check_input_size, create_model
    from repro.threads import resolve_threads, use_threads

    if not cfg.energy.meters or all(str(m) == "none" for m in cfg.energy.meters):
        raise UserError(f"{describe}: energy.meters measure nothing, so a probe cannot measure J/image")
    use_threads(resolve_threads(cfg.training.threads))
    seed_everything(cfg.seed)
    training = cfg.training
    data = build_data(
        cfg.dataset, training.batch_size, cfg.seed, preprocessing=cfg.model.preprocessing,
        drop_last=training.drop_last,
    )  # fmt: skip
    model = create_model(cfg.model, num_classes=1 if data.binary else data.num_classes)
    check_input_size(model, cfg.dataset.image_size, cfg.model.name)
    with tempfile.TemporaryDirectory(prefix="repro-probe-") as folder:
        monitor = create_monitor(cfg.energy, device, Path(folder))
        try:
            if idle_power_w is None and (cfg.energy.baseline_s > 0 or cfg.energy.cooldown_s > 0):
                idle_power_w = monitor.measure_baseline(
                    min(cfg.energy.baseline_s + cfg.energy.cooldown_s, 3.0)
                )
            monitor.start()
            try:
                phases = _run_phases(model, data, cfg, device, seconds, monitor)
            finally:
                monitor.stop()
        except (torch.cuda.OutOfMemoryError, MemoryError, RuntimeError) as error:
            if isinstance(error, RuntimeError) and not _out_of_memory(error):
                raise
            raise UserError(
                f"the probe of {describe} ran out of memory at training.batch_size={training.batch_size} "
                f"on {device}; lower the batch size or the image size"
            ) from None
        methods = monitor.provenance_tags()
    from repro import names
    from repro.energy.measurement import COMPONENTS

    component_methods = {
        c: methods[names.energy_method_tag(c)]
        for c in COMPONENTS
        if methods.get(names.energy_method_tag(c), "not-measured") != "not-measured"
    }
    return ProbeResult(
        device=str(device), phases=phases, methods=component_methods, estimated=monitor.estimated,
        idle_power_w=idle_power_w, warmup_s=cfg.energy.warmup_s, baseline_s=cfg.energy.baseline_s,
        cooldown_s=cfg.energy.cooldown_s,
    )  # fmt: skip


def project(
    result: ProbeResult,
    train_images_per_epoch: int,
    val_images_per_epoch: int,
    head_epochs: int,
    epochs: tuple[int, int, int],
    bias: BiasCorrection | None = None,
) -> dict[str, float]:
    """The run's figures from a probe: J/image per phase x images per epoch x epochs, x its bias correction.

    Args:
        head_epochs: the job's head-only epochs; the rest of each epoch count fine-tunes.
        epochs: (point, low, high) epochs the run will train (`repro.estimate.report.epoch_range`).
        bias: the correction for the probe's bias against full runs; None: `device_bias` of its device.

    Returns:
        `energy_j`, `gpu_energy_j` (NaN unless a GPU was measured), `duration_s` and `images`, each at
        the point, low and high epochs (`_low`, `_high`), the per-image figures of the study's definition
        (training and validation images) at the point epochs with the same relative interval, and
        `overhead_j`: the idle baseline and cooldown of one job at the measured idle power, and `warmup_j`:
        the campaign's warm-up at the head phase's measured power (paid once per sweep). Every figure but
        the overheads is multiplied by the bias correction (`bias_correction` says by how much); the
        interval multiplies the probe's step-to-step spread (the 90% interval of each phase's mean step,
        `spread_pct`) by the correction's band and takes the epoch range's ends.
    """
    phases = result.phases
    point, low, high = epochs
    bias = bias if bias is not None else device_bias(result.device)

    def run(epoch_count: int, per_image: str) -> tuple[float, float]:
        head = min(head_epochs, epoch_count)
        parts = {
            "head": head * train_images_per_epoch,
            "finetune": (epoch_count - head) * train_images_per_epoch,
            "validation": epoch_count * val_images_per_epoch,
        }
        total = sum(getattr(phases[p], per_image) * n for p, n in parts.items() if n)
        return total, float(sum(parts.values()))

    energy, images = run(point, "j_per_image")
    shares = {
        p: run_share
        for p in _PHASES
        if (
            run_share := _phase_share(
                phases[p], p, head_epochs, point, train_images_per_epoch, val_images_per_epoch, energy
            )
        )  # fmt: skip
    }
    spread = math.sqrt(sum((shares[p] * phases[p].spread) ** 2 for p in shares))
    factor = {
        "": bias.factor,
        "_low": bias.factor * (1 - spread) * bias.band[0],
        "_high": bias.factor * (1 + spread) * bias.band[1],
    }
    counts = {"": point, "_low": low, "_high": high}
    out: dict[str, float] = {}
    for suffix, n in counts.items():
        for name, per_image in (("energy_j", "j_per_image"), ("gpu_energy_j", "gpu_j_per_image"),
                                ("duration_s", "s_per_image")):  # fmt: skip
            total, n_images = run(n, per_image)
            out[f"{name}{suffix}"] = total * factor[suffix]
        out[f"images{suffix}"] = run(n, "s_per_image")[1]
    for suffix in counts:
        out[f"energy_j_per_image{suffix}"] = energy / images * factor[suffix]
        out[f"gpu_energy_j_per_image{suffix}"] = run(point, "gpu_j_per_image")[0] / images * factor[suffix]
        out[f"duration_ms_per_image{suffix}"] = run(point, "s_per_image")[0] * 1000 / images * factor[suffix]
    idle = result.idle_power_w
    out["overhead_j"] = (result.baseline_s + result.cooldown_s) * idle if idle is not None else 0.0
    head = phases["head"]
    out["warmup_j"] = (
        result.warmup_s * sum(head.energy_j.values()) / head.duration_s if head.duration_s else 0.0
    )
    out["spread_pct"] = spread * 100
    out["bias_correction"] = bias.factor
    return out


def _phase_share(
    phase: PhaseMeasurement, name: str, head_epochs: int, epochs: int, train: int, val: int, energy: float
) -> float:
    """The share of the run's energy that one phase's per-image figure carries."""
    head = min(head_epochs, epochs)
    images = {"head": head * train, "finetune": (epochs - head) * train, "validation": epochs * val}[name]
    return phase.j_per_image * images / energy if energy > 0 and images else 0.0


def _out_of_memory(error: RuntimeError) -> bool:
    """Whether a RuntimeError is torch's CPU allocator (or an older CUDA one) running out of memory."""
    text = str(error)
    return (
        isinstance(error, torch.cuda.OutOfMemoryError)
        or "out of memory" in text
        or ("can't allocate memory" in text)
    )


def _run_phases(model, data, cfg: Config, device: torch.device, seconds: float, monitor) -> dict:  # noqa: ANN001
    """Warm-up, head-only and fine-tuning steps, then validation, through `repro.loop`'s own functions."""
    import dataclasses

    from repro import loop
    from repro.models import set_base_trainable

    training = cfg.training
    loop.lay_out(model, training.memory_format, device)  # the job's layout, as loop.train lays it out
    set_base_trainable(model, False)
    head_optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=training.head_lr)
    steps_per_epoch = len(data.train_loader)
    if training.max_steps_per_epoch is not None:
        steps_per_epoch = min(steps_per_epoch, training.max_steps_per_epoch)
    phases: dict[str, PhaseMeasurement] = {}

    def train(phase: str, optimizer: torch.optim.Optimizer, warmup: bool) -> None:
        measured = PhaseMeasurement(phase)
        batches = _TimedBatches(
            data.train_loader, steps_per_epoch, seconds, device, monitor.window(phase), measured,
            warmup_steps=_WARMUP_STEPS if warmup else 0, warmup_s=_WARMUP_SHARE * seconds if warmup else 0.0,
        )  # fmt: skip
        probe_data = dataclasses.replace(data, train_loader=batches)
        loop._train_one_epoch(
            model,
            probe_data,
            optimizer,
            device,
            None,
            f"probe ({phase})",
            lambda: False,
            training.freeze_bn,
            amp=training.amp,  # the job's precision, with a gradient scaler of its own for fp16
        )
        phases[phase] = measured

    train("head", head_optimizer, warmup=True)
    set_base_trainable(model, True)
    optimizer = torch.optim.SGD(model.parameters(), lr=training.finetune_lr, momentum=training.momentum)
    train("finetune", optimizer, warmup=False)
    measured = PhaseMeasurement("validation")
    window = monitor.window("validation")
    steps = len(data.val_loader)
    batches = _TimedBatches(data.val_loader, steps, seconds, device, window, measured, once=True)
    loop.evaluate(model, dataclasses.replace(data, val_loader=batches), device, amp=training.amp)
    phases["validation"] = measured
    return phases


class _TimedBatches:
    """A loader's batches for the probe: unmeasured warm-up steps, then `seconds` inside an energy window.

    The loop asks for the next batch once the step before has run, so the time between two requests is
    one step: loading, forward, backward and update. The loader is restarted every `steps_per_epoch`
    steps, as the run's epochs restart it; `once` stops after one pass (validation).
    """

    def __init__(
        self,
        loader: torch.utils.data.DataLoader,
        steps_per_epoch: int,
        seconds: float,
        device: torch.device,
        window: AbstractContextManager,
        measured: PhaseMeasurement,
        warmup_steps: int = 0,
        warmup_s: float = 0.0,
        once: bool = False,
    ) -> None:
        self.loader = loader
        self.steps_per_epoch = max(steps_per_epoch, 1)
        self.seconds = seconds
        self.device = device
        self.window = window
        self.measured = measured
        self.warmup_steps = warmup_steps
        self.warmup_s = warmup_s
        self.once = once

    def __len__(self) -> int:
        return self.steps_per_epoch

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _steps(self) -> Iterator[tuple[int, object]]:
        """(step within the epoch, batch), epoch after epoch; one pass when `once`."""
        while True:
            for step, batch in enumerate(self.loader):
                if step >= self.steps_per_epoch:
                    break
                yield step, batch
            if self.once:
                return

    def _go_on(self, step: int, done: int) -> bool:
        """Past the time, whether to finish the epoch: when it is short, so that its loader start-up is
        measured as often as the run pays it (at most doubling the time)."""
        return step != 0 and self.steps_per_epoch - step <= done

    def __iter__(self) -> Iterator:
        steps = self._steps()
        started = time.perf_counter()
        warm = 0
        item = next(steps, None)
        while item is not None and (
            warm < self.warmup_steps
            or time.perf_counter() - started < self.warmup_s
            or self._go_on(item[0], warm)
        ):
            yield item[1]
            warm += 1
            item = next(steps, None)
        if item is None:
            return
        self._sync()
        with self.window as window, _CpuShare() as others:
            start = last = time.perf_counter()
            while item is not None:
                yield item[1]
                self.measured.images += len(item[1][1])
                now = time.perf_counter()  # the step has run (on a GPU: been queued; synchronised below)
                self.measured.step_s.append(now - last)
                last = now
                item = next(steps, None)
                if (
                    item is not None
                    and now - start >= self.seconds
                    and not self._go_on(item[0], len(self.measured.step_s))
                ):
                    break
            self._sync()
            self.measured.duration_s = time.perf_counter() - start
        self.measured.energy_j = dict(window.measurement.energy_j) if window.measurement else {}
        self.measured.others_cpu_share = others.share


def others_cpu_share(machine_busy_s: float, process_busy_s: float, wall_s: float, cpus: int) -> float:
    """The share of `cpus` x `wall_s` of CPU time that went to other processes than this one: the machine's
    busy CPU seconds less this process's, clipped to [0, 1]; NaN without a span to divide by."""
    if wall_s <= 0 or cpus <= 0:
        return math.nan
    return min(max((machine_busy_s - process_busy_s) / (cpus * wall_s), 0.0), 1.0)


class _CpuShare:
    """Measures, around a block, the share of the machine's CPU that other processes used (`share`)."""

    def __enter__(self) -> _CpuShare:
        import psutil

        self._process = psutil.Process()
        self._machine = _busy_s(psutil.cpu_times())
        self._own = _own_s(self._process)
        self._start = time.perf_counter()
        self.share = math.nan
        return self

    def __exit__(self, *exc: object) -> None:
        import psutil

        wall_s = time.perf_counter() - self._start
        machine = _busy_s(psutil.cpu_times()) - self._machine
        own = _own_s(self._process) - self._own
        self.share = others_cpu_share(machine, own, wall_s, psutil.cpu_count() or 1)


def _busy_s(times) -> float:  # noqa: ANN001  (psutil's scputimes)
    """The machine's busy CPU seconds: all but idle and I/O wait (guest time is already in user time)."""
    uncounted = ("idle", "iowait", "guest", "guest_nice")
    return sum(times) - sum(getattr(times, name, 0.0) for name in uncounted)


def _own_s(process) -> float:  # noqa: ANN001  (psutil.Process)
    """This process's CPU seconds, its threads and its children's (data loader workers) included."""
    import psutil

    seconds = 0.0
    for member in (process, *process.children(recursive=True)):
        with contextlib.suppress(psutil.NoSuchProcess):  # a worker that ended meanwhile
            times = member.cpu_times()
            seconds += times.user + times.system
    return seconds
