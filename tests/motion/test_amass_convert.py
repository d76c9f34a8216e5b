"""AMASS conversion on AMASS-shaped files written here: frame rates, SMPL-X keys, splits, skipped files, round trip."""

from __future__ import annotations

from pathlib import Path
from typing import Dict

import numpy as np
import pytest
import torch

from phc_lightning.cli import main
from phc_lightning.motion import BUNDLED_MOTIONS, fk
from phc_lightning.motion.amass import motion_to_amass_arrays, place_on_floor, smpl_to_global
from phc_lightning.motion.convert import amass_jobs, convert_motions
from phc_lightning.motion.formats import load_motion_file
from phc_lightning.motion.raw_motion import RawMotion
from phc_lightning.motion.resample import resample_motion
from tests.helpers import CMU_PKL


def bundled(key: str) -> RawMotion:
    return next(m for m in load_motion_file(BUNDLED_MOTIONS) if m.key == key)


def write_amass(path: Path, motion: RawMotion, fps: float, smplx: bool = False) -> None:
    """An AMASS-style file of ``motion`` captured at ``fps`` (SMPL-H layout, or SMPL-X's 165 poses and key)."""
    arrays: Dict[str, np.ndarray] = motion_to_amass_arrays(resample_motion(motion, fps))
    if smplx:
        arrays["poses"] = np.concatenate([arrays["poses"], np.zeros((arrays["poses"].shape[0], 9))], axis=1)
        arrays["mocap_frame_rate"] = arrays.pop("mocap_framerate")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)


def body_positions(motion: RawMotion) -> np.ndarray:
    return fk.body_positions(torch.from_numpy(motion.root_pos), torch.from_numpy(motion.global_rot)).numpy()


@pytest.fixture()
def amass_tree(tmp_path: Path) -> Path:
    root = tmp_path / "AMASS"
    write_amass(root / "CMU" / "01" / "01_01_poses.npz", bundled("walk"), 120.0)
    write_amass(root / "Transitions" / "mazen" / "jump_poses.npz", bundled("squat"), 60.0, smplx=True)
    write_amass(root / "HumanEva" / "S1" / "wave_poses.npz", bundled("wave"), 100.0)
    np.savez(root / "CMU" / "01" / "shape.npz", betas=np.zeros(16))  # not a motion: ignored
    good = (root / "CMU" / "01" / "01_01_poses.npz").read_bytes()
    (root / "CMU" / "02").mkdir()
    (root / "CMU" / "02" / "02_01_poses.npz").write_bytes(good[: len(good) // 2])  # truncated download
    nan = motion_to_amass_arrays(bundled("turn"))
    nan["trans"][7, 1] = np.nan
    np.savez(root / "CMU" / "02" / "02_02_poses.npz", **nan)
    short = motion_to_amass_arrays(bundled("stand"))
    np.savez(root / "CMU" / "02" / "02_03_poses.npz", **{k: v[:5] if v.ndim == 2 else v for k, v in short.items()})
    return root


def test_tree_converts_good_files_and_lists_bad_ones_with_reasons(amass_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "amass.npz"
    report = convert_motions(amass_tree, out, workers=1)
    motions = {m.key: m for m in load_motion_file(out)}
    assert sorted(motions) == ["0-CMU_01_01_01_poses", "0-HumanEva_S1_wave_poses", "0-Transitions_mazen_jump_poses"]
    assert all(m.fps == 30.0 for m in motions.values())
    reasons = {Path(p).name: reason for p, reason in report.skipped}
    assert sorted(reasons) == ["02_01_poses.npz", "02_02_poses.npz", "02_03_poses.npz"]
    assert "not a zip" in reasons["02_01_poses.npz"] or "unreadable" in reasons["02_01_poses.npz"]
    assert "NaN" in reasons["02_02_poses.npz"] and "frame 7" in reasons["02_02_poses.npz"]
    assert "too short" in reasons["02_03_poses.npz"]
    assert report.motions == 3 and report.outside_split == 0


@pytest.mark.parametrize("key, source", [("0-CMU_01_01_01_poses", "walk"), ("0-Transitions_mazen_jump_poses", "squat")])
def test_converted_motion_matches_the_original(amass_tree: Path, tmp_path: Path, key: str, source: str) -> None:
    out = tmp_path / "amass.npz"
    convert_motions(amass_tree, out, workers=1)
    got = next(m for m in load_motion_file(out) if m.key == key)
    want = place_on_floor(bundled(source))
    assert got.num_frames == want.num_frames
    np.testing.assert_allclose(body_positions(got), body_positions(want), atol=2e-4)
    dots = np.abs((got.global_rot.astype(np.float64) * want.global_rot).sum(-1))
    assert dots.min() > 1 - 1e-5


def test_split_keeps_phc_test_subdatasets_only(amass_tree: Path, tmp_path: Path) -> None:
    jobs, outside = amass_jobs(amass_tree, "test")
    assert [Path(p).name for p, _ in jobs] == ["jump_poses.npz"]  # SMPL-X "Transitions" = PHC's Transitions_mocap
    assert outside == 5
    report = convert_motions(amass_tree, tmp_path / "test.npz", split="test", workers=1)
    assert report.motions == 1 and not report.skipped


def test_phc_pkl_and_native_files_convert(tmp_path: Path) -> None:
    out = tmp_path / "native.npz"
    report = convert_motions(BUNDLED_MOTIONS, out, workers=1)
    assert report.motions == 7
    assert [m.key for m in load_motion_file(out)] == [m.key for m in load_motion_file(BUNDLED_MOTIONS)]


def test_keys_and_exclude_select_motions_for_a_held_out_split(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    train, held_out = tmp_path / "train.npz", tmp_path / "held_out.npz"
    with pytest.raises(SystemExit) as done:
        main(["motions", "convert", BUNDLED_MOTIONS, str(train), "--exclude", "walk*", "jog"])
    assert done.value.code == 0
    convert_motions(BUNDLED_MOTIONS, held_out, workers=1, keys=["walk*", "jog"])
    assert [m.key for m in load_motion_file(train)] == ["stand", "turn", "squat", "wave"]
    assert [m.key for m in load_motion_file(held_out)] == ["walk", "walk_circle", "jog"]
    with pytest.raises(SystemExit) as exit_info:
        main(["motions", "convert", BUNDLED_MOTIONS, str(tmp_path / "x.npz"), "--keys", "crawl*"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"phc: error: {BUNDLED_MOTIONS}: --keys 'crawl*' matches no motion key"]


def test_cli_reports_an_unusable_file_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad_poses.npz"
    bad.write_bytes(b"not a zip at all")
    with pytest.raises(SystemExit) as exit_info:
        main(["motions", "convert", str(bad), str(tmp_path / "out.npz"), "--workers", "1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("phc: error: ") and str(bad) in err[-1]


@pytest.mark.slow
def test_process_pool_gives_the_same_file(amass_tree: Path, tmp_path: Path) -> None:
    convert_motions(amass_tree, tmp_path / "one.npz", workers=1)
    report = convert_motions(amass_tree, tmp_path / "pool.npz", workers=2)
    assert len(report.skipped) == 3
    assert (tmp_path / "one.npz").read_bytes() == (tmp_path / "pool.npz").read_bytes()


@pytest.mark.skipif(not CMU_PKL.is_file(), reason="needs ../shared/data/cmu_mocap_05_06.pkl")
def test_transform_reproduces_phc_global_rotations() -> None:
    """PHC's own converted clip: our SMPL axis-angle -> upright global rotations equals its pose_quat_global."""
    from phc_lightning.motion.pkl import load_pickle_restricted

    entry = next(iter(load_pickle_restricted(CMU_PKL).values()))
    _, rot = smpl_to_global(np.asarray(entry["pose_aa"]), np.asarray(entry["root_trans_offset"]))
    dots = np.abs((rot * np.asarray(entry["pose_quat_global"])).sum(-1))
    assert dots.min() > 1 - 1e-6
