"""What a meter returns: joules per component, how each was obtained, and GPU statistics."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from repro.names import COMPONENTS  # the components a meter can measure


@dataclass(frozen=True)
class Method:
    """One way of obtaining a component's energy, as a meter declares it when it registers.

    Attributes:
        name: What the `energy.method.<component>` tag says, e.g. `rapl` or `tdp-load-estimate`.
        rank: Its place among every meter's methods; lower is better (a counter beats sampling beats
            a model). `merge` takes each component from the meter with the best rank.
        estimate: Whether it is a model of power rather than a reading of the hardware.
    """

    name: str
    rank: int
    estimate: bool


#: The hardware readings that several meters report: declare these, so that each means one thing.
RAPL = Method("rapl", rank=10, estimate=False)  # the CPU's (and DRAM's) energy counters
NVML_COUNTER = Method("nvml-counter", rank=20, estimate=False)  # the GPU's total-energy counter (Volta+)
NVML_SAMPLED = Method("nvml-sampled", rank=30, estimate=False)  # GPU power sampled and integrated


#: Every method a registered meter may report, by name (filled by `register_methods`).
_METHODS: dict[str, Method] = {}


def register_methods(methods: Sequence[Method]) -> None:
    """Add a meter's methods; the same name declared twice must mean the same thing."""
    for method in methods:
        known = _METHODS.setdefault(method.name, method)
        if known != method:
            raise ValueError(f"energy method {method.name!r} is declared twice, as {known} and {method}")


def ranked_methods() -> tuple[str, ...]:
    """Every registered method, best first."""
    return tuple(sorted(_METHODS, key=lambda name: (_METHODS[name].rank, name)))


def is_estimate(method: str) -> bool:
    """Whether a method is a model of power rather than a reading; an unregistered one counts as a model."""
    known = _METHODS.get(method)
    return known.estimate if known is not None else True


def _method_rank(method: str) -> tuple[int, int]:
    known = _METHODS.get(method)
    return (0, known.rank) if known is not None else (1, 0)


@dataclass(frozen=True)
class GpuStats:
    """The NVML sampler's view of the GPU over a span of time."""

    usage_pct: float  # mean utilization
    power_avg_w: float  # energy / duration (time-weighted)
    temp_avg_c: float
    mem_used_peak_mb: float
    samples: int


@dataclass
class Measurement:
    """Energy over one span of time (a window or the whole run).

    Attributes:
        energy_j: Joules per component (`cpu`, `gpu`, `ram`); a component nothing measured is absent.
        method: How each component in `energy_j` was obtained (a registered `Method`'s name).
        duration_s: Wall-clock length of the span.
        gpu: Utilization, power, temperature and memory, when an NVML sampler ran.
        alternatives_j: Every figure that was taken for a component, keyed `component.source`
            (e.g. `gpu.codecarbon`, `gpu.nvml-sampled`, `gpu.nvml-counter`), for comparing meters.
    """

    energy_j: dict[str, float]
    method: dict[str, str]
    duration_s: float
    gpu: GpuStats | None = None
    alternatives_j: dict[str, float] = field(default_factory=dict)

    @property
    def total_j(self) -> float:
        return sum(self.energy_j.values())

    @property
    def estimated(self) -> bool:
        return any(is_estimate(method) for method in self.method.values())


def merge(measurements: list[Measurement], preferred: list[dict[str, int]] | None = None) -> Measurement:
    """Combine what several meters measured over the same span.

    Each component comes from the meter with the best-ranked method (see `Method.rank`); on a tie, from the
    meter with the highest preference for that component (`preferred[i][component]`), then the first.

    Args:
        measurements: One per meter, all over the same span.
        preferred: Per meter, a tie-break weight per component; higher wins.
    """
    if not measurements:
        return Measurement(energy_j={}, method={}, duration_s=0.0)
    preferred = preferred or [{} for _ in measurements]
    energy_j: dict[str, float] = {}
    method: dict[str, str] = {}
    best: dict[str, tuple[int, int]] = {}
    alternatives_j: dict[str, float] = {}
    gpu = None
    for measurement, preference in zip(measurements, preferred, strict=True):
        alternatives_j.update(measurement.alternatives_j)
        gpu = gpu or measurement.gpu
        for component, joules in measurement.energy_j.items():
            key = (_method_rank(measurement.method[component]), -preference.get(component, 0))
            if component not in best or key < best[component]:
                best[component] = key
                energy_j[component] = joules
                method[component] = measurement.method[component]
    duration_s = max(measurement.duration_s for measurement in measurements)
    ordered = {c: energy_j[c] for c in COMPONENTS if c in energy_j}
    return Measurement(ordered, {c: method[c] for c in ordered}, duration_s, gpu, alternatives_j)
