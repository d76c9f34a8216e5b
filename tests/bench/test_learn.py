"""``phc bench learn``: the curve, the periodic and final evaluations, the zero-action baseline, the saved policy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import SMOKE, phc


@pytest.mark.slow
def test_bench_learn_writes_the_curve_the_evaluations_and_the_zero_action_baseline(tmp_path: Path) -> None:
    out = tmp_path / "learn.json"
    ckpt = tmp_path / "final.ckpt"
    run = phc("bench", "learn", "--config", SMOKE, "--env_steps", "384", "--eval_every", "2", "--out", str(out),
              "--save_ckpt", str(ckpt), "--model.learning_rate", "1e-3", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "zero-action baseline" in run.stdout and "final policy" in run.stdout
    summary = json.loads(out.read_text())
    assert summary["overrides"] == ["--model.learning_rate", "1e-3"]
    assert summary["env_steps"] >= 384 and [row["epoch"] for row in summary["curve"]] == [0, 1, 2]
    assert {"env_steps", "train_minutes", "episode_length", "episode_return", "explained_variance", "approx_kl",
            "clipfrac", "learning_rate", "action_std"} <= set(summary["curve"][-1])
    assert summary["curve"][-1]["learning_rate"] == pytest.approx(1e-3, rel=1e-2)  # smoke.yaml decays it slowly
    # one periodic evaluation (after epoch 1) and the final one, each playing every bundled motion once
    assert [e["epoch"] for e in summary["evaluations"]] == [1, 2]
    for record in (summary["final"], summary["zero_action_baseline"]):
        assert len(record["motions"]) == 7 and 0.0 <= record["success_rate"] <= 1.0
        assert record["num_success"] == sum(m["success"] for m in record["motions"])
    assert summary["stability"]["max_success_drop"] >= 0
    clipfracs = [row["clipfrac"] for row in summary["curve"]]
    assert summary["trust_region"]["clipfrac_max"] == max(clipfracs)
    assert "stability: best" in run.stdout and "clipfrac mean" in run.stdout
    assert not (tmp_path / "runs").exists() and not (tmp_path / "config.yaml").exists()  # no run directory touched
    # the saved checkpoint is the policy the final evaluation played: validate plays it to the same errors
    assert summary["checkpoint"] == str(ckpt)
    val = phc("validate", "--config", SMOKE, "--ckpt_path", str(ckpt), cwd=tmp_path)
    assert val.returncode == 0, val.stderr[-3000:]
    again = json.loads(next((tmp_path / "runs").rglob("validate_summary.json")).read_text())
    assert again["mpjpe_g"] == pytest.approx(summary["final"]["mpjpe_g"], rel=1e-5)
    assert again["success_rate"] == summary["final"]["success_rate"]


def test_bench_learn_stability_is_the_largest_drop_below_the_best_so_far() -> None:
    from phc_lightning.bench.learn import stability

    evals = [{"num_success": n} for n in (1, 4, 3, 5, 2, 5)]
    assert stability(evals) == {"max_success_drop": 3, "best_num_success": 5}


def test_bench_learn_trust_region_summarises_kl_and_clipfrac_over_the_iterations() -> None:
    from phc_lightning.bench.learn import trust_region

    curve = [{"epoch": e, "approx_kl": kl, "clipfrac": cf}
             for e, (kl, cf) in enumerate([(0.01, 0.1), (0.04, 0.35), (0.02, 0.2), (0.03, None)])]
    tr = trust_region(curve)
    assert tr["approx_kl_mean"] == pytest.approx(0.025) and tr["approx_kl_max"] == 0.04
    assert tr["clipfrac_max"] == 0.35 and tr["clipfrac_max_epoch"] == 1
    assert tr["clipfrac_mean"] == pytest.approx(0.65 / 3)
    assert tr["clipfrac_below_bound"] == pytest.approx(2 / 3)  # an iteration without a clipfrac does not count
    assert trust_region([])["clipfrac_max"] is None
