"""Native .npz motion files: round trip, determinism, bad files (PHC .pkl: test_pkl.py)."""

from __future__ import annotations

import os
import pickle
import time
from pathlib import Path
from typing import Callable, Dict

import numpy as np
import pytest

from phc_lightning.motion.formats import load_motion_file, save_motions_npz
from phc_lightning.motion.raw_motion import MotionFileError, RawMotion, validate_motion


def random_motion(key: str, num_frames: int, fps: float = 30.0, seed: int = 0) -> RawMotion:
    rng = np.random.default_rng(seed)
    rot = rng.normal(size=(num_frames, 24, 4))
    rot /= np.linalg.norm(rot, axis=-1, keepdims=True)
    pos = rng.normal(size=(num_frames, 3))
    return RawMotion(key=key, fps=fps, root_pos=pos.astype(np.float32), global_rot=rot.astype(np.float32))


def good_arrays() -> Dict[str, np.ndarray]:
    a, b = random_motion("walk", 5, seed=1), random_motion("run", 3, 60.0, seed=2)
    return {
        "format": np.array("phc-lightning-motions"),
        "version": np.array(1, dtype=np.int64),
        "keys": np.array(["walk", "run"]),
        "fps": np.array([30.0, 60.0], dtype=np.float32),
        "num_frames": np.array([5, 3], dtype=np.int64),
        "root_pos": np.concatenate([a.root_pos, b.root_pos]),
        "global_rot": np.concatenate([a.global_rot, b.global_rot]),
    }


def assert_one_line_error(path: Path, load: Callable[[Path], object], *fragments: str) -> str:
    with pytest.raises(MotionFileError) as info:
        load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


# ------------------------------------------------------------------ native .npz


def test_npz_round_trip_keeps_every_motion(tmp_path):
    motions = [random_motion("walk", 7, 30.0, seed=1), random_motion("jump", 2, 24.0, seed=2)]
    path = tmp_path / "m.npz"
    save_motions_npz(path, motions)
    loaded = load_motion_file(path)
    assert [m.key for m in loaded] == ["walk", "jump"]
    assert [m.fps for m in loaded] == [30.0, 24.0]
    for before, after in zip(motions, loaded):
        assert after.root_pos.dtype == np.float32 and after.global_rot.dtype == np.float32
        np.testing.assert_array_equal(after.root_pos, before.root_pos)
        np.testing.assert_allclose(after.global_rot, before.global_rot, atol=1e-6)


def test_npz_layout_matches_the_contract(tmp_path):
    path = tmp_path / "m.npz"
    save_motions_npz(path, [random_motion("a", 4), random_motion("b", 3)])
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    assert set(arrays) == {"format", "version", "keys", "fps", "num_frames", "root_pos", "global_rot"}
    assert str(arrays["format"]) == "phc-lightning-motions" and arrays["format"].shape == ()
    assert arrays["version"].dtype == np.int64 and int(arrays["version"]) == 1
    assert arrays["keys"].dtype.kind == "U" and arrays["keys"].tolist() == ["a", "b"]
    assert arrays["fps"].dtype == np.float32 and arrays["num_frames"].dtype == np.int64
    assert arrays["root_pos"].shape == (7, 3) and arrays["root_pos"].dtype == np.float32
    assert arrays["global_rot"].shape == (7, 24, 4) and arrays["global_rot"].dtype == np.float32


def test_npz_bytes_do_not_depend_on_when_they_are_written(tmp_path, monkeypatch):
    motions = [random_motion("a", 9, seed=3), random_motion("b", 4, seed=4)]
    save_motions_npz(tmp_path / "first.npz", motions)
    save_motions_npz(tmp_path / "second.npz", motions)
    later = time.time() + 400 * 86400.0  # zip members carry timestamps; ours must be fixed
    monkeypatch.setattr(time, "time", lambda: later)
    save_motions_npz(tmp_path / "later.npz", motions)
    first = (tmp_path / "first.npz").read_bytes()
    assert first == (tmp_path / "second.npz").read_bytes() == (tmp_path / "later.npz").read_bytes()


def test_npz_quaternions_slightly_off_unit_are_renormalized(tmp_path):
    arrays = good_arrays()
    arrays["global_rot"] = arrays["global_rot"] * 1.01
    path = tmp_path / "m.npz"
    np.savez(path, **arrays)
    norms = np.linalg.norm(load_motion_file(path)[0].global_rot, axis=-1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-6)


def test_npz_loader_holds_the_file_arrays_once_with_the_bits_of_a_validated_copy(tmp_path):
    # A large motion set must not sit in memory twice while loading: motions are views of the arrays read from the
    # archive, renormalized in place with the same arithmetic as a validated copy.
    arrays = good_arrays()
    arrays["global_rot"] = arrays["global_rot"] * 1.01
    path = tmp_path / "m.npz"
    np.savez(path, **arrays)
    walk, run = load_motion_file(path)
    assert np.shares_memory(walk.global_rot.base, run.global_rot) and np.shares_memory(walk.root_pos.base, run.root_pos)
    copies = [
        validate_motion(path, "walk", 30.0, arrays["root_pos"][:5], arrays["global_rot"][:5]),
        validate_motion(path, "run", 60.0, arrays["root_pos"][5:], arrays["global_rot"][5:]),
    ]
    for loaded, copy in zip((walk, run), copies):
        assert loaded.global_rot.tobytes() == copy.global_rot.tobytes()
        assert loaded.root_pos.tobytes() == copy.root_pos.tobytes()
    assert not np.shares_memory(copies[0].global_rot, arrays["global_rot"])  # callers' arrays are never modified


def _drop(key: str):
    return lambda a: {k: v for k, v in a.items() if k != key}


def _set(key: str, make: Callable[[Dict[str, np.ndarray]], np.ndarray]):
    return lambda a: {**a, key: make(a)}


def _nan_in_root(a):
    pos = a["root_pos"].copy()
    pos[6, 1] = np.nan
    return pos


def _zero_quat(a):
    rot = a["global_rot"].copy()
    rot[2, 13] = 0.0
    return rot


BAD_NPZ = {
    "missing key": (_drop("global_rot"), ["missing key(s) global_rot"]),
    "wrong body count": (_set("global_rot", lambda a: a["global_rot"][:, :23]), ["global_rot", "[T, 24, 4]"]),
    "rows do not match num_frames": (_set("num_frames", lambda a: np.array([5, 4])), ["root_pos", "sums to 9"]),
    "NaN": (_set("root_pos", _nan_in_root), ["motion 'run'", "NaN", "frame 1"]),
    "zero frames": (_set("num_frames", lambda a: np.array([8, 0])), ["motion 'run'", "at least 2 frames, got 0"]),
    "one frame": (_set("num_frames", lambda a: np.array([7, 1])), ["motion 'run'", "at least 2 frames, got 1"]),
    "zero quaternion": (_set("global_rot", _zero_quat), ["zero quaternion", "frame 2", "Head"]),
    "negative fps": (_set("fps", lambda a: np.array([30.0, -1.0], dtype=np.float32)), ["motion 'run'", "fps"]),
    "wrong magic": (_set("format", lambda a: np.array("something else")), ["'format'"]),
    "object keys": (_set("keys", lambda a: np.array(["walk", "run"], dtype=object)), ["'keys'", "cannot be read"]),
    "string positions": (_set("root_pos", lambda a: a["root_pos"].astype(str)), ["root_pos", "numeric"]),
}


@pytest.mark.parametrize("case", list(BAD_NPZ))
def test_bad_npz_raises_one_line_error_naming_the_problem(tmp_path, case):
    edit, fragments = BAD_NPZ[case]
    path = tmp_path / "bad.npz"
    np.savez(path, **edit(good_arrays()))
    assert_one_line_error(path, load_motion_file, *fragments)


def test_missing_path_and_unknown_extension_are_reported(tmp_path):
    assert_one_line_error(tmp_path / "nope.npz", load_motion_file, "no such file")
    other = tmp_path / "motions.bvh"
    other.write_text("HIERARCHY")
    assert_one_line_error(other, load_motion_file, "unknown motion file extension '.bvh'")


def test_truncated_and_garbage_files_are_reported(tmp_path):
    good = tmp_path / "good.npz"
    save_motions_npz(good, [random_motion("a", 50)])
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert_one_line_error(truncated, load_motion_file, "not a valid .npz")
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(os.urandom(256))
    assert_one_line_error(garbage, load_motion_file, "not a valid .npz")
    garbage_pkl = tmp_path / "garbage.pkl"
    garbage_pkl.write_bytes(b"\x80\x04this is not a pickle at all")
    assert_one_line_error(garbage_pkl, load_motion_file, "not a valid pickle")
    cut_pkl = tmp_path / "cut.pkl"
    cut_pkl.write_bytes(pickle.dumps({"m": {"pose_quat_global": np.zeros((3, 24, 4))}})[:-40])
    assert_one_line_error(cut_pkl, load_motion_file, "not a valid pickle")


def test_raw_amass_npz_gets_a_hint(tmp_path):
    path = tmp_path / "amass.npz"
    np.savez(path, poses=np.zeros((3, 156)), trans=np.zeros((3, 3)), mocap_framerate=np.array(120.0))
    assert_one_line_error(path, load_motion_file, "raw AMASS")


def test_save_refuses_bad_motions(tmp_path):
    with pytest.raises(MotionFileError, match="duplicate motion key 'a'"):
        save_motions_npz(tmp_path / "m.npz", [random_motion("a", 3), random_motion("a", 4)])
    with pytest.raises(MotionFileError, match="must end in .npz"):
        save_motions_npz(tmp_path / "m.bin", [random_motion("a", 3)])
    assert not list(tmp_path.iterdir())
