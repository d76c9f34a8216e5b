"""A CSV logger whose resumed run continues its ``metrics.csv``.

Lightning's ``CSVLogger`` deletes an existing ``metrics.csv`` when it starts in a non-empty directory, which is
exactly what a resumed run does (one run directory, one logger version). This one appends instead, keeping the
existing header's columns. The run directory logic uses it in place of Lightning's ``CSVLogger``.
"""

from __future__ import annotations

import csv
import os

from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class AppendingExperimentWriter(ExperimentWriter):
    """Appends to an existing ``metrics.csv`` (its header's columns stay) instead of deleting it."""

    def __init__(self, log_dir: str) -> None:
        super().__init__(log_dir)
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as f:
                self.metrics_keys = sorted(next(csv.reader(f), []))

    def _check_log_dir_exists(self) -> None:
        """A resumed run writes into its own directory on purpose: nothing to warn about or delete."""


class CSVLogger(LightningCSVLogger):
    """Lightning's ``CSVLogger`` with :class:`AppendingExperimentWriter`."""

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = AppendingExperimentWriter(log_dir=self.log_dir)
        return self._experiment
