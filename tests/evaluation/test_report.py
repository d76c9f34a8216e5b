"""The evaluation report PNG: drawn from per-motion rows, with and without per-frame errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from phc_lightning.evaluation.report import write_eval_report, write_run_report
from phc_lightning.motion import BUNDLED_MOTIONS
from phc_lightning.motion.library import MotionLibrary

imageio = pytest.importorskip("imageio")

ROWS = [
    {"motion_id": 0, "steps_played": 100, "success": True, "mpjpe_g": 35.0, "mpjpe_l": 20.0, "mpjpe_pa": 12.0},
    {"motion_id": 1, "steps_played": 12, "success": False, "mpjpe_g": 180.0, "mpjpe_l": 90.0, "mpjpe_pa": 40.0},
    {"motion_id": 2, "steps_played": 40, "success": False, "mpjpe_g": float("nan"), "mpjpe_l": 1.0, "mpjpe_pa": 1.0},
]
SUMMARY = {"success_rate": 1 / 3, "mpjpe_g": 80.0, "mpjpe_l": 40.0, "mpjpe_pa": 20.0}


def test_run_report_is_a_png_beside_the_csv(tmp_path: Path) -> None:
    lib = MotionLibrary(BUNDLED_MOTIONS)
    path = write_run_report(str(tmp_path), "epoch00002", ROWS, SUMMARY, lib)
    assert path == str(tmp_path / "epoch00002_report.png")
    picture = imageio.v3.imread(path)
    assert picture.ndim == 3 and picture.shape[0] > 200 and picture.shape[1] > 600
    assert picture[..., :3].std() > 10  # bars and text, not an empty canvas


def test_report_with_frame_errors_and_nan_summary(tmp_path: Path) -> None:
    curves = {1: np.linspace(10, 500, 12), 0: np.full(100, 35.0)}
    path = write_eval_report(str(tmp_path / "r.png"), ROWS, {"success_rate": math.nan}, "validate", None, curves)
    assert imageio.v3.imread(path).shape[1] > 600
