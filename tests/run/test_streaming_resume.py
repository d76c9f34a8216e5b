"""Training on a motion set larger than the resident budget (a streaming library) resumes bit-exactly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from phc_lightning.motion.variations import lognormal_lengths, write_varied_motions
from phc_lightning.run.lightning_cli import PHCCLI, run_cli
from tests.run.test_resume import assert_same_state, losses, smoke_with_callbacks

NUM_MOTIONS = 24  # smoke.yaml: 8 envs, so at most 8 resident motions; 3 evaluation chunks


def fit(run_dir: Path, max_epochs: int, config: str, motion_file: Path, *extra: str) -> PHCCLI:
    run_dir.mkdir(parents=True, exist_ok=True)
    cwd = os.getcwd()
    os.chdir(run_dir)
    try:
        return run_cli(["fit", "--config", config, "--trainer.max_epochs", str(max_epochs),
                        "--data.motion_file", str(motion_file), *extra])
    finally:
        os.chdir(cwd)


@pytest.mark.slow
def test_resume_with_a_resident_subset_equals_training_straight(tmp_path: Path) -> None:
    motion_file = tmp_path / "forty.npz"
    write_varied_motions(motion_file, lognormal_lengths(NUM_MOTIONS, hours=0.0, median_seconds=0.6, sigma=0.2,
                                                        bounds=(0.5, 0.8), seed=1), seed=1)
    # smoke.yaml evaluates every 2 epochs (each chunk makes its motions resident, then training's come back) and
    # MotionResampling redraws right after: at epochs 1 and 3. No final evaluation (EvalStats), to save time.
    config = smoke_with_callbacks(tmp_path, (
        "    - class_path: callbacks.PHCCheckpoint\n"
        "    - class_path: callbacks.MotionResampling\n"
        "      init_args:\n"
        "        every_n_epochs: 2\n"
    ))
    straight = fit(tmp_path / "straight", 4, config, motion_file)
    fit(tmp_path / "resumed", 2, config, motion_file)
    resumed = fit(tmp_path / "resumed", 4, config, motion_file, "--ckpt_path", "last")
    checkpoints = Path("runs") / "smoke" / "version_0" / "checkpoints"
    assert_same_state(tmp_path / "straight" / checkpoints, tmp_path / "resumed" / checkpoints)
    a = torch.load(tmp_path / "straight" / checkpoints / "last.ckpt", weights_only=True)["PHCDataModule"]
    b = torch.load(tmp_path / "resumed" / checkpoints / "last.ckpt", weights_only=True)["PHCDataModule"]
    for key in ("obs", "motion_ids", "motion_times"):
        torch.testing.assert_close(b["env"][key], a["env"][key], rtol=0, atol=0, msg=key)
    la, lb = losses(tmp_path / "straight"), losses(tmp_path / "resumed")
    assert la[2] == lb[2] and la[3] == lb[3]

    for cli in (straight, resumed):
        motions, env = cli.datamodule.motions, cli.datamodule.env
        assert not motions.all_resident and motions.num_motions == NUM_MOTIONS
        assert motions.resident_ids.numel() <= 8  # the envs' motions only; their buffers, no others'
        assert motions.resident_frames == int(motions.num_frames[motions.resident_ids].sum())
        assert motions.resident_ids.tolist() == sorted(set(a["env"]["motion_ids"].tolist()))
        assert env is None  # closed at the end of fit; the library stays for the checks above
