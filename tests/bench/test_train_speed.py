"""``phc bench train``: where an iteration's time goes, measured in one run."""

from __future__ import annotations

from pathlib import Path

import pytest

from phc_lightning.bench.train_speed import TRAIN_PARTS, bench_train
from tests.helpers import SMOKE


def test_bench_train_splits_the_whole_iteration_time_into_its_parts(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    out = bench_train(SMOKE, epochs=2, overrides=["--data.num_envs", "4"])
    parts = [out[f"time_{part}"] for part in TRAIN_PARTS]
    assert sum(parts) == pytest.approx(1.0)
    assert all(share > 0 for share in parts), dict(zip(TRAIN_PARTS, parts))
    assert out["time_update"] == pytest.approx(out["learn_fraction"])  # the update is the whole learning phase
