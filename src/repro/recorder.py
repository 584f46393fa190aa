"""What a training job records each epoch: its energy window, MLflow metrics (step=epoch), history.csv.

The loop calls the recorder through `loop.LoopHooks` and knows nothing of meters or MLflow.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from repro import loop, names
from repro.config import Config
from repro.energy import EnergyMonitor
from repro.energy.projection import EnergyProjection
from repro.spool import RunSpool


def epoch_projection(cfg: Config, monitor: EnergyMonitor) -> EnergyProjection:
    """STEP's projection and the energy budget for this job's epochs (`repro.energy.projection`)."""
    training = cfg.training
    earliest = training.head_epochs + min(training.early_stopping_patience, training.finetune_epochs)
    max_epochs = training.head_epochs + training.finetune_epochs
    return EnergyProjection(cfg.energy, max_epochs, earliest, lambda: monitor.carbon_intensity()[0])


class EpochRecorder:
    """Per-epoch energy windows, MLflow metrics with step=epoch, and the history table.

    `history.csv` gets each epoch's row as soon as the epoch ends, so a job that dies later keeps it.
    """

    def __init__(
        self, monitor: EnergyMonitor, sink: RunSpool, history_path: Path, projection: EnergyProjection
    ) -> None:
        self.monitor = monitor
        self.sink = sink
        self.history_path = history_path
        self.projection = projection
        self.history: list[dict[str, Any]] = []
        self.images_seen = 0  # training and validation passes (names.IMAGES_SEEN)
        self.train_images_seen = 0
        self.write_errors: list[str] = []
        self._last_window_metrics: dict[str, float] = {}

    @contextmanager
    def scope(self, epoch: int) -> Iterator[None]:
        with self.monitor.window(f"epoch-{epoch}") as window:
            yield
        self._last_window_metrics = self.monitor.epoch_metrics(window.measurement)

    def on_epoch_end(self, record: loop.EpochRecord) -> None:
        self.images_seen += record.images
        self.train_images_seen += record.train_images
        metrics = {
            names.TRAIN_LOSS: record.train_loss,
            names.VAL_ACCURACY: record.val_accuracy,
            names.VAL_F1: record.val_f1,
            names.EPOCH_DURATION_S: record.epoch_duration_s,
            names.LEARNING_RATE: record.learning_rate,
            **self._last_window_metrics,
        }
        projected = self.projection.on_epoch(self._last_window_metrics.get("epoch_energy_j"))
        self.sink.log_metrics({**metrics, **projected}, step=record.epoch)
        self.history.append({**record.as_row(), **self._last_window_metrics, **projected})
        self.write_history()

    def write_history(self) -> None:
        """Rewrite the history table (never through a symlink); a full disk fails the run, naming the file."""
        if not self.history:
            return
        self.history_path.parent.mkdir(parents=True, exist_ok=True)
        columns = list(dict.fromkeys(key for row in self.history for key in row))
        fd = os.open(self.history_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
        try:
            with os.fdopen(fd, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=columns)
                writer.writeheader()
                writer.writerows(self.history)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as error:
            error.filename = error.filename or str(self.history_path)
            raise
