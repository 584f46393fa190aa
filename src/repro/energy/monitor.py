"""The energy monitor of one training job: its meters, windows, metrics and provenance."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from repro import names
from repro.config import EnergyConfig
from repro.energy import meters as _meters  # noqa: F401  (registers every meter)
from repro.energy.measurement import COMPONENTS, Measurement, is_estimate, merge
from repro.energy.protocol import countdown
from repro.energy.registry import Meter, MeterContext, check_names, get_spec, parse
from repro.errors import UserError

log = logging.getLogger(__name__)

_J_PER_KWH = 3.6e6


@dataclass
class Window:
    """A named span of the run; `measurement` is set when the `with` block exits."""

    name: str
    measurement: Measurement | None = None


def create_monitor(cfg: EnergyConfig, device: torch.device, output_dir: Path) -> EnergyMonitor:
    """An unstarted monitor for the job's energy config (its schema checked its values when converted).

    `check_energy_config` runs here (and in preflight, before any job starts). An optional
    meter (`NAME-if-available`, or `nvml-if-gpu`) is dropped here when it says it cannot measure on
    `device`, and at `start` when it fails to start; a meter named plainly stops the job.
    """
    check_energy_config(cfg)
    resolved: list[str] = []
    optional: set[str] = set()
    for entry in cfg.meters:
        parsed = parse(entry)
        if parsed is None:
            continue
        name, is_optional = parsed
        if is_optional:
            reason = get_spec(name).cls.unavailable(device)
            if reason is not None:
                log.info("energy meter %r skipped: %s", name, reason)
                continue
            optional.add(name)
        if name not in resolved:
            resolved.append(name)
    optional -= {entry for entry in cfg.meters if entry in resolved}  # also named plainly: required
    return EnergyMonitor(cfg, device, output_dir, resolved, optional)


def check_energy_config(cfg: EnergyConfig) -> None:
    """Raise `UserError` on what `EnergyConfig` cannot check without the plugins: an unknown meter name,
    `none` mixed with meters, or a country CodeCarbon's grid data does not know."""
    check_names(cfg.meters)
    if cfg.country_iso_code is not None:
        from codecarbon.input import DataSource  # the grid data the intensity is looked up in

        if cfg.country_iso_code not in DataSource().get_global_energy_mix_data():
            raise UserError(
                f"energy.country_iso_code={cfg.country_iso_code!r} is not a country CodeCarbon knows; "
                "use a 3-letter ISO code such as ESP, FRA or USA"
            )


def check_meters_available(meters: list[str]) -> None:
    """Raise `UserError` when a meter named plainly in `energy.meters` cannot run on this machine.

    For the preflight checks on the machine that trains; optional meters are only skipped.
    """
    check_names(meters)
    for entry in meters:
        parsed = parse(entry)
        if parsed is not None and not parsed[1]:
            reason = get_spec(parsed[0]).cls.unavailable(None)
            if reason is not None:
                raise UserError(f"energy meter {parsed[0]!r} is unavailable: {reason}")


class EnergyMonitor:
    """Runs a job's meters and turns what they measured into MLflow metrics and tags.

    Use `create_monitor` to build one. Meters are created in `start` (and afresh for
    `measure_baseline`), because CodeCarbon's tracker measures one start/stop cycle only.
    """

    def __init__(
        self,
        cfg: EnergyConfig,
        device: torch.device,
        output_dir: Path,
        meters: list[str],
        optional: set[str] | None = None,
    ) -> None:
        self.cfg = cfg
        self.device = device
        self.output_dir = output_dir
        self.meter_names = meters
        self.optional = optional or set()
        self.idle_power_w: float | None = None
        self.baseline_s = 0.0
        self._meters: list[Meter] = []
        self._total: Measurement | None = None
        self._start_s: float | None = None
        self._skipped: list[str] = []
        self._preparing: threading.Thread | None = None

    @property
    def measuring(self) -> bool:
        """Whether any meter is configured (`energy=none` measures nothing and needs no lock)."""
        return bool(self.meter_names)

    def prepare(self) -> None:
        """Begin every meter's slow one-off set-up (`Meter.prepare`, hardware detection) in a thread.

        Call it before the job builds its data and model, which then overlap it; the meters start (and
        the idle baseline begins) only once it is done. A second call does nothing.
        """
        if self._preparing is not None or not self.meter_names:
            return
        classes = [get_spec(name).cls for name in self.meter_names]
        self._preparing = threading.Thread(
            target=self._prepare, args=(classes,), name="repro-meters-prepare", daemon=True
        )
        self._preparing.start()

    def _prepare(self, classes: list[type[Meter]]) -> None:
        for cls in classes:
            if cls.unavailable(self.device) is not None:
                continue  # `start` refuses it, or skips it if optional
            try:
                cls.prepare(self.device)
            except Exception as error:  # `start` meets it again and reports it as it always has
                log.debug("energy meter %r: set-up ahead of start failed (%s)", cls.name, error)

    def _build(self, baseline: bool) -> list[Meter]:
        if self._preparing is not None:
            self._preparing.join()  # no meter starts before its set-up ahead of time is done
        context = MeterContext(self.device, self.output_dir, baseline)
        meters: list[Meter] = []
        for name in self.meter_names:
            spec = get_spec(name)
            reason = spec.cls.unavailable(self.device)
            if reason is not None and name not in self.optional:
                raise UserError(f"energy meter {name!r} is unavailable: {reason}")
            meters.append(spec.cls.from_config(spec.settings(self.cfg), context))
        return meters

    def _start_meters(self, meters: list[Meter]) -> list[Meter]:
        """Start every meter or none: on a failure, stop those already started and raise.

        An optional meter that fails to start is skipped with a warning (`energy.meters_skipped`).
        """
        started: list[Meter] = []
        try:
            for meter in meters:
                try:
                    meter.start()
                except UserError as error:
                    if meter.name not in self.optional:
                        raise
                    log.warning(
                        "energy meter %r skipped (%s); other meters measure, if any", meter.name, error
                    )
                    if meter.name not in self._skipped:
                        self._skipped.append(meter.name)
                    continue
                started.append(meter)
        except BaseException:
            for meter in started:
                meter.stop()
            raise
        return started

    def measure_baseline(self, seconds: float) -> float | None:
        """Measure the machine's idle power for `seconds` before the run; None when 0 or nothing measures."""
        if seconds == 0 or not self.meter_names:
            return None
        meters = self._start_meters(self._build(baseline=True))
        try:
            countdown(seconds, "idle baseline")
        finally:
            idle = merge([meter.stop() for meter in meters], [meter.preference for meter in meters])
        if idle.duration_s > 0 and idle.energy_j:
            self.idle_power_w = idle.total_j / idle.duration_s
            self.baseline_s = idle.duration_s
        return self.idle_power_w

    def start(self) -> None:
        """Start every meter and check each really runs (`estimated` then says if any figure is a model)."""
        self._meters = self._start_meters(self._build(baseline=False))
        self._start_s = time.perf_counter()

    @contextmanager
    def window(self, name: str) -> Iterator[Window]:
        """Measure the block as a named window (one epoch, say); sets `Window.measurement` on exit."""
        window = Window(name)
        start_s = time.perf_counter()
        for meter in self._meters:
            meter.open_window(name)
        try:
            yield window
        finally:
            if self._meters:
                measurements = [meter.close_window(name) for meter in self._meters]
                window.measurement = merge(measurements, [meter.preference for meter in self._meters])
            else:
                window.measurement = Measurement({}, {}, time.perf_counter() - start_s)

    def stop(self) -> Measurement:
        """Stop every meter and return the whole run; safe to call again, and after an exception."""
        if self._total is None:
            measurements: list[Measurement] = []
            errors: list[BaseException] = []
            for meter in self._meters:  # stop every meter even if one fails
                try:
                    measurements.append(meter.stop())
                except Exception as error:
                    log.error("energy meter %r failed to stop: %s", meter.name, error)
                    errors.append(error)
                    if meter.stopped:  # it measured, but could not write its files: keep the measurement
                        measurements.append(meter.stop())
            duration_s = time.perf_counter() - self._start_s if self._start_s is not None else 0.0
            self._total = (
                merge(measurements, [meter.preference for meter in self._meters if meter.stopped])
                if measurements
                else Measurement({}, {}, duration_s)
            )
            if errors:
                raise errors[0]
        return self._total

    def _methods(self) -> dict[str, str]:
        if self._total is not None and self._total.method:
            return self._total.method
        empty = [Measurement(dict.fromkeys(m.methods(), 0.0), m.methods(), 0.0) for m in self._meters]
        return merge(empty, [meter.preference for meter in self._meters]).method

    @property
    def estimated(self) -> bool:
        """Whether any component's energy is a model rather than a reading (valid once started)."""
        return any(is_estimate(method) for method in self._methods().values())

    def carbon_intensity(self) -> tuple[float | None, str]:
        """The gCO2e/kWh applied to the total energy, and where it came from."""
        if self.cfg.carbon_intensity_g_per_kwh is not None:
            return self.cfg.carbon_intensity_g_per_kwh, "config"
        for meter in self._meters:
            if meter.intensity_g_per_kwh is not None:
                return meter.intensity_g_per_kwh, meter.intensity_source
        return None, "none"

    def run_metrics(self, total: Measurement, images_seen: int, duration_s: float) -> dict[str, float]:
        """The run's final energy metrics; a component nothing measured has no key.

        Args:
            images_seen: the images processed in training and validation passes (`names.IMAGES_SEEN`),
                which every per-image figure divides by, as the study did.
        """
        metrics: dict[str, float] = {}
        if images_seen > 0:
            metrics[names.DURATION_MS_PER_IMAGE] = duration_s * 1000 / images_seen
        if not total.energy_j:
            return metrics
        for component in COMPONENTS:
            if component in total.energy_j:
                metrics[names.energy_component_j(component)] = total.energy_j[component]
        metrics[names.ENERGY_TOTAL_J] = total.total_j
        if total.duration_s > 0:
            metrics[names.POWER_AVG_W] = total.total_j / total.duration_s
        if images_seen > 0:
            metrics[names.ENERGY_J_PER_IMAGE] = total.total_j / images_seen
            if self.device.type == "cuda" and "gpu" in total.energy_j:
                metrics[names.GPU_ENERGY_J_PER_IMAGE] = total.energy_j["gpu"] / images_seen
        intensity, _ = self.carbon_intensity()
        if intensity is not None:
            metrics[names.EMISSIONS_G] = total.total_j / _J_PER_KWH * intensity
        if self.idle_power_w is not None:
            metrics[names.IDLE_POWER_W] = self.idle_power_w
            metrics[names.ENERGY_NET_J] = total.total_j - self.idle_power_w * total.duration_s
        for key, joules in total.alternatives_j.items():
            component, source = key.split(".", 1)
            metrics[names.energy_source_j(component, source)] = joules
        if total.gpu is not None:
            metrics[names.GPU_USAGE_PCT] = total.gpu.usage_pct
            metrics[names.GPU_POWER_AVG_W] = total.gpu.power_avg_w
            metrics[names.GPU_TEMP_AVG_C] = total.gpu.temp_avg_c
            metrics[names.GPU_MEM_USED_MB] = total.gpu.mem_used_peak_mb
        return metrics

    def epoch_metrics(self, measurement: Measurement) -> dict[str, float]:
        """One window's metrics, to log with `step=epoch`."""
        if not measurement.energy_j:
            return {}
        metrics = {names.EPOCH_ENERGY_J: measurement.total_j}
        if self.device.type == "cuda" and "gpu" in measurement.energy_j:
            metrics[names.EPOCH_GPU_ENERGY_J] = measurement.energy_j["gpu"]
        return metrics

    def provenance_tags(self) -> dict[str, str]:
        """MLflow tags saying how each figure was obtained (complete once stopped)."""
        methods = self._methods()
        tags = {
            "energy.meters": ",".join(meter.name for meter in self._meters) or "none",
            names.TAG_ENERGY_ESTIMATED: str(self.estimated).lower(),
        }
        if self._skipped:
            tags["energy.meters_skipped"] = ",".join(self._skipped)
        for component in COMPONENTS:
            tags[names.energy_method_tag(component)] = methods.get(component, "not-measured")
        for meter in self._meters:
            tags.update(meter.provenance())
        intensity, source = self.carbon_intensity()
        if intensity is not None:
            tags["energy.carbon_intensity_g_per_kwh"] = f"{intensity:g}"
            tags["energy.carbon_intensity_source"] = source
            tags["energy.emissions_method"] = "energy_total_j / 3.6e6 x carbon_intensity_g_per_kwh"
        if self.idle_power_w is not None:
            tags["energy.baseline_s"] = f"{self.baseline_s:.1f}"
        return tags

    def artifact_paths(self) -> list[Path]:
        """Files to log as artifacts, e.g. CodeCarbon's CSV and the NVML trace (once stopped)."""
        return [path for meter in self._meters for path in meter.artifact_paths()]
