"""``phc bench learn``: the curve, the periodic and final evaluations, the zero-action baseline, the saved policy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import SMOKE, phc

# A budget small enough for a test, settings that learn within it: one motion, a higher lr, more envs.
LEARN = ("--model.learning_rate", "3e-4", "--data.num_envs", "32", "--data.gae_lambda", "0.95",
         "--data.task.power_coef", "0")


def stand_only(tmp_path: Path) -> Path:
    from phc_lightning.motion import BUNDLED_MOTIONS
    from phc_lightning.motion.formats import load_motion_file, save_motions_npz

    path = tmp_path / "stand.npz"
    save_motions_npz(path, [m for m in load_motion_file(BUNDLED_MOTIONS) if m.key == "stand"])
    return path


@pytest.mark.slow
def test_bench_learn_learns_and_writes_the_curve_the_evaluations_the_best_and_the_zero_action_baseline(
    tmp_path: Path,
) -> None:
    out = tmp_path / "learn.json"
    ckpt = tmp_path / "final.ckpt"
    overrides = ("--data.motion_file", str(stand_only(tmp_path)), *LEARN)
    run = phc("bench", "learn", "--config", SMOKE, "--env_steps", "8192", "--eval_every", "8", "--out", str(out),
              "--save_ckpt", str(ckpt), *overrides, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "zero-action baseline" in run.stdout and "final policy" in run.stdout
    summary = json.loads(out.read_text())
    assert summary["overrides"] == list(overrides)
    curve = summary["curve"]
    assert summary["env_steps"] >= 8192 and [row["epoch"] for row in curve] == list(range(16))  # 512 steps each
    assert {"env_steps", "train_minutes", "episode_length", "episode_return", "explained_variance", "approx_kl",
            "clipfrac", "learning_rate", "action_std"} <= set(curve[-1])
    assert curve[-1]["learning_rate"] == pytest.approx(3e-4, rel=1e-2)  # smoke.yaml decays it slowly
    # the periodic evaluations (after epochs 7 and 15) and the final one, each playing the motion once
    assert [e["epoch"] for e in summary["evaluations"]] == [7, 15, 15]
    final, baseline = summary["final"], summary["zero_action_baseline"]
    for record in (final, baseline):
        assert [m["key"] for m in record["motions"]] == ["stand"] and 0.0 <= record["success_rate"] <= 1.0
        assert record["num_success"] == sum(m["success"] for m in record["motions"])

    # a learning signal a learner that does not learn fails: training episodes (PHC's absolute actions: a zero
    # action pulls to the T-pose, which ends them in 2 steps) grow longer and earn more, and the trained policy holds
    # the standing pose (mpjpe_pa) far closer than the zero-action baseline
    returns = [row["episode_return"] for row in curve]
    assert sum(returns[-3:]) > 1.4 * sum(returns[:3]), returns
    assert final["motions"][0]["mpjpe_pa"] < 0.85 * baseline["motions"][0]["mpjpe_pa"], (final, baseline)

    # the best evaluation beside the final one
    from phc_lightning.bench.learn import best_evaluation

    assert summary["best"] == best_evaluation(summary["evaluations"])
    assert summary["best"]["num_motions"] == 1 and summary["best"]["env_steps"] in (4096, 8192)
    assert "best evaluation:" in run.stdout and "tracked, mpjpe_g" in run.stdout

    assert summary["stability"]["max_success_drop"] >= 0
    clipfracs = [row["clipfrac"] for row in curve]
    assert summary["trust_region"]["clipfrac_max"] == max(clipfracs)
    assert "stability: best" in run.stdout and "clipfrac mean" in run.stdout
    assert not (tmp_path / "runs").exists() and not (tmp_path / "config.yaml").exists()  # no run directory touched
    # the saved checkpoint is the policy the final evaluation played: validate plays it to the same errors
    assert summary["checkpoint"] == str(ckpt)
    val = phc("validate", "--config", SMOKE, "--ckpt_path", str(ckpt), *overrides[:2], cwd=tmp_path)
    assert val.returncode == 0, val.stderr[-3000:]
    again = json.loads(next((tmp_path / "runs").rglob("validate_summary.json")).read_text())
    assert again["mpjpe_g"] == pytest.approx(final["mpjpe_g"], rel=1e-5)
    assert again["success_rate"] == final["success_rate"]


def test_bench_learn_best_evaluation_is_the_highest_success_then_the_lowest_error() -> None:
    from phc_lightning.bench.learn import best_evaluation

    def record(epoch: int, rate: float, error: float) -> dict:
        return {"epoch": epoch, "env_steps": 100 * epoch, "train_minutes": epoch / 10, "success_rate": rate,
                "mpjpe_g": error, "num_success": int(rate * 4), "motions": [{}] * 4}

    evals = [record(1, 0.5, 40.0), record(2, 0.75, 60.0), record(3, 0.75, 50.0), record(4, 0.75, 50.0),
             record(4, 0.5, 30.0)]
    best = best_evaluation(evals)
    assert best == {"evaluation": 2, "final": False, "epoch": 3, "env_steps": 300, "train_minutes": 0.3,
                    "num_success": 3, "num_motions": 4, "success_rate": 0.75, "mpjpe_g": 50.0}
    assert best_evaluation([record(1, 0.5, None), record(2, 0.5, 80.0)])["evaluation"] == 1  # no error: the worst
    assert best_evaluation([]) is None


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
