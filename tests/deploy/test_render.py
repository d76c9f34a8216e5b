"""Headless rendering: preview and policy videos are real pictures (not blank, not one frame repeated)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from phc_lightning.cli import main
from phc_lightning.learner.module import PHCModule
from phc_lightning.motion import BUNDLED_MOTIONS

imageio = pytest.importorskip("imageio")
SIZE = ["--width", "96", "--height", "72"]


def gif_frames(path: Path) -> np.ndarray:
    frames = imageio.v3.imread(path, index=None)
    return frames[..., :3] if frames.shape[-1] == 4 else frames


def assert_real_video(frames: np.ndarray, min_frames: int) -> None:
    assert frames.ndim == 4 and frames.shape[0] >= min_frames and frames.shape[1:3] == (72, 96)
    for frame in frames:
        assert frame.std() > 5.0  # floor, sky and a lit humanoid, not a blank picture
    assert np.abs(frames[0].astype(int) - frames[-1].astype(int)).max() > 50  # the humanoid moved


def tiny_checkpoint(path: Path) -> Path:
    module = PHCModule(actor_hidden=[16], critic_hidden=[16])
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, path)
    return path


def test_preview_writes_a_gif_of_the_posed_humanoid(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "preview.gif"
    with pytest.raises(SystemExit) as exit_info:
        main(["motions", "preview", BUNDLED_MOTIONS, "--out", str(out), "--motions", "walk", "--fps", "6"] + SIZE)
    assert exit_info.value.code == 0
    assert_real_video(gif_frames(out), min_frames=10)
    assert "wrote" in capsys.readouterr().out


def test_render_draws_the_policy_with_a_translucent_reference(tmp_path: Path) -> None:
    out = tmp_path / "policy.gif"
    ckpt = tiny_checkpoint(tmp_path / "tiny.ckpt")
    with pytest.raises(SystemExit) as exit_info:
        main(["render", "--ckpt_path", str(ckpt), "--out", str(out), "--motions", "wave", "--fps", "10"] + SIZE)
    assert exit_info.value.code == 0
    frames = gif_frames(out).astype(int)
    assert_real_video(frames, min_frames=3)
    blue = (frames[..., 2] - frames[..., 0] > 40).sum(axis=(1, 2))  # the reference ghost is light blue
    assert (blue > 20).all()


def test_unknown_motion_and_bad_suffix_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for args, text in (
        (["--out", str(tmp_path / "x.gif"), "--motions", "moonwalk"], "no motion named 'moonwalk'"),
        (["--out", str(tmp_path / "x.avi")], "must end in .gif or .mp4"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(["motions", "preview", BUNDLED_MOTIONS] + args + SIZE)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("phc: error: ") and text in err and "\n" not in err
