"""STEP: where a run's energy is heading, projected after every epoch, and the energy budget.

After epoch `done`, with `measured` the energy of the epochs so far and `mean` the mean energy of
the last `window` epochs:

- `energy_projected_j = measured + mean x (max_epochs - done)`: the run trains every epoch it may;
- `energy_projected_low_j = measured + mean x (earliest_epochs - done)`: early stopping fires at
  the first epoch it can (the head epochs plus the patience).

The projection starts at `energy.projection.start_epoch` (1-based), or with `auto` once the last
epochs' energies are stable: their (max - min) / mean is below `tolerance`. The rule follows the
STEP estimator of del Rey et al. (arXiv:2307.05520 v5); carbontracker's rule is the special case of
projecting from epoch 1 alone (`epoch_1_energy x max_epochs`).

When the run ends, the error of the projection that each of the first epochs would have made
(k = 1...5, `energy_projection_error_pct_k{k}`) and of carbontracker's rule are logged as run
metrics, so that `python -m repro.estimate validate` can read them back from MLflow.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from repro import names
from repro.config import EnergyConfig

#: The epochs after which the final projection errors are logged.
ERROR_EPOCHS = names.PROJECTION_ERROR_EPOCHS
AUTO = "auto"
_J_PER_KWH = 3.6e6


def project(
    epoch_energies_j: Sequence[float], window: int, max_epochs: int, earliest_epochs: int
) -> tuple[float, float]:
    """The projected total energy if the run goes on to `max_epochs`, and if it stops at the earliest.

    Args:
        epoch_energies_j: the energy of every epoch so far, in order.
        window: how many of the latest epochs are averaged.
        max_epochs: the most epochs the run may train.
        earliest_epochs: the epoch at which early stopping can fire first.

    Returns:
        (high, low) in joules.
    """
    done = len(epoch_energies_j)
    measured = float(sum(epoch_energies_j))
    latest = epoch_energies_j[-window:]
    mean = measured / done if not latest else float(sum(latest)) / len(latest)
    high = measured + mean * max(0, max_epochs - done)
    low = measured + mean * max(0, earliest_epochs - done)
    return high, low


def is_stable(epoch_energies_j: Sequence[float], window: int, tolerance: float) -> bool:
    """Whether the last `max(window, 2)` epochs' energies vary by less than `tolerance` of their mean."""
    size = max(window, 2)
    if len(epoch_energies_j) < size:
        return False
    latest = epoch_energies_j[-size:]
    mean = sum(latest) / size
    return mean > 0 and (max(latest) - min(latest)) / mean < tolerance


class EnergyProjection:
    """Follows a run's epoch energies: per-epoch projections, the budget, the final projection errors."""

    def __init__(
        self,
        cfg: EnergyConfig,
        max_epochs: int,
        earliest_epochs: int,
        intensity_g_per_kwh: Callable[[], float | None] = lambda: None,
    ) -> None:
        """
        Args:
            cfg: the job's energy config (projection and budget keys).
            max_epochs: the most epochs the run may train (head plus fine-tuning epochs).
            earliest_epochs: the first epoch after which early stopping can end the run.
            intensity_g_per_kwh: the carbon intensity applied to the run's energy, when known.
        """
        self.cfg = cfg
        self.max_epochs = max_epochs
        self.earliest_epochs = min(earliest_epochs, max_epochs)
        self.intensity_g_per_kwh = intensity_g_per_kwh
        self.energies_j: list[float] = []
        self.start_epoch: int | None = None
        self.budget_message: str | None = None  # set when a budget stops the run

    def on_epoch(self, epoch_energy_j: float | None) -> dict[str, float]:
        """Record one finished epoch's energy; returns the metrics to log at this epoch's step."""
        if epoch_energy_j is None:
            return {}  # nothing measured the epoch: no projection, and no budget can be checked
        self.energies_j.append(epoch_energy_j)
        done = len(self.energies_j)
        window = self.cfg.projection.window
        if self.start_epoch is None:
            start = self.cfg.projection.start_epoch
            if start == AUTO:
                stable = is_stable(self.energies_j, window, self.cfg.projection.tolerance)
                self.start_epoch = done if stable else None
            elif done >= int(start):
                self.start_epoch = done
        metrics: dict[str, float] = {}
        measured_j = float(sum(self.energies_j))
        expected_j = measured_j
        if self.start_epoch is not None:
            high, low = project(self.energies_j, window, self.max_epochs, self.earliest_epochs)
            metrics = {names.ENERGY_PROJECTED_J: high, names.ENERGY_PROJECTED_LOW_J: low}
            intensity = self.intensity_g_per_kwh()
            if intensity is not None:
                metrics[names.EMISSIONS_PROJECTED_G] = high / _J_PER_KWH * intensity
            expected_j = high
        self._check_budget(done, measured_j, expected_j, projected=self.start_epoch is not None)
        return metrics

    def _check_budget(self, done: int, measured_j: float, expected_j: float, projected: bool) -> None:
        if self.budget_message is not None or done >= self.max_epochs:
            return
        what = "projected" if projected else "measured"
        if self.cfg.budget_j is not None and expected_j > self.cfg.budget_j:
            over = expected_j - self.cfg.budget_j
            self.budget_message = (
                f"stopped by energy.budget_j={self.cfg.budget_j:g}: after epoch {done} the {what} energy "
                f"{expected_j:.6g} J exceeds it by {over:.6g} J ({100 * over / self.cfg.budget_j:.1f}%)"
            )
            return
        intensity = self.intensity_g_per_kwh()
        if self.cfg.budget_gco2 is not None and intensity is not None:
            expected_g = expected_j / _J_PER_KWH * intensity
            if expected_g > self.cfg.budget_gco2:
                over = expected_g - self.cfg.budget_gco2
                self.budget_message = (
                    f"stopped by energy.budget_gco2={self.cfg.budget_gco2:g}: after epoch {done} the {what} "
                    f"emissions {expected_g:.6g} gCO2e exceed it by {over:.6g} gCO2e "
                    f"({100 * over / self.cfg.budget_gco2:.1f}%)"
                )

    def budget_exceeded(self) -> bool:
        """Whether a budget asks to end the run after the epoch just recorded."""
        return self.budget_message is not None

    def final_metrics(self) -> dict[str, float]:
        """The error (%) of the projection made after each of the first epochs, against the run's total.

        The total is the sum of the epoch energies, the same windows the projections were made from.
        Left out when a budget stopped the run: its total is not where the run was heading.
        """
        if not self.energies_j or self.budget_message is not None:
            return {}
        actual_j = float(sum(self.energies_j))
        if actual_j <= 0:
            return {}
        window = self.cfg.projection.window
        metrics: dict[str, float] = {}
        for k in ERROR_EPOCHS:
            if k > len(self.energies_j):
                break
            high, _ = project(self.energies_j[:k], window, self.max_epochs, self.earliest_epochs)
            metrics[names.energy_projection_error_pct(k)] = 100 * (high - actual_j) / actual_j
        carbontracker_j = self.energies_j[0] * self.max_epochs
        carbontracker_error_pct = 100 * (carbontracker_j - actual_j) / actual_j
        metrics[names.ENERGY_PROJECTION_CARBONTRACKER_ERROR_PCT] = carbontracker_error_pct
        if self.start_epoch is not None:
            metrics[names.ENERGY_PROJECTION_START_EPOCH] = float(self.start_epoch)
        return metrics
