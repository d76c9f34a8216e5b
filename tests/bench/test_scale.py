"""``phc bench scale`` on a small generated set: training holds its envs' motions only, evaluation one chunk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import SMOKE, phc


@pytest.mark.slow
def test_bench_scale_measures_a_streaming_library_at_training_and_evaluation(tmp_path: Path) -> None:
    motion_file = tmp_path / "set.npz"
    out = tmp_path / "scale.json"
    proc = phc("bench", "scale", "--config", SMOKE, "--motions", "30", "--hours", "0.01", "--num_envs", "4",
               "--motion_file", str(motion_file), "--out", str(out), "--num_threads", "1", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "phc bench scale" in proc.stdout and motion_file.is_file()  # generated there, kept
    result = json.loads(out.read_text())
    train, evaluation = result["training"], result["evaluation"]
    assert train["motions"] == 30 and train["hours"] * 3600 >= 36
    for lib in (train["library_first_iteration"], train["library_after_resample"]):
        assert 1 <= lib["resident_motions"] <= 4  # the envs' motions, of 30
        assert lib["frames_gb"] == pytest.approx(lib["resident_frames"] * 1800 / 1e9)
        assert lib["raw_gb"] == pytest.approx(train["frames"] * 396 / 1e9)
    assert train["first_iteration_seconds"] > train["ready_seconds"] > 0 and train["peak_rss_gb"] > 0
    assert evaluation["library_loaded"]["frames_gb"] == 0 and evaluation["chunk_motions"] == 4
