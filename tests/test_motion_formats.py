"""Motion files: native .npz round trip and determinism, PHC .pkl through the restricted unpickler, bad files."""

from __future__ import annotations

import gzip
import os
import pickle
import subprocess
import time
import zlib
from pathlib import Path
from typing import Callable, Dict

import numpy as np
import pytest
import torch

from phc_lightning.motion.formats import (
    MotionFileError,
    RawMotion,
    load_motion_file,
    save_motions_npz,
    validate_motion,
)
from phc_lightning.motion.info import motion_info, print_motion_info
from phc_lightning.motion.pkl import load_phc_pkl, load_pickle_restricted

SAMPLE_PKL = Path(__file__).resolve().parents[2] / "shared/data/cmu_mocap_05_06.pkl"


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


# ------------------------------------------------------------------ PHC .pkl: restricted unpickler


class Evil:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return os.system, (f"touch {self.target}",)


def test_evil_pickle_is_refused_before_anything_runs(tmp_path):
    pwned = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"motion": Evil(pwned)}))
    message = assert_one_line_error(path, load_motion_file, "refusing to load pickled object", "system'")
    assert message.endswith("(only numpy arrays, torch tensors and builtins are allowed)")
    assert not pwned.exists()
    # The same call spelled by hand as the module 'os' gives exactly the documented message.
    path.write_bytes(b"cos\nsystem\n(S'touch " + str(pwned).encode() + b"'\ntR.")
    message = assert_one_line_error(path, load_motion_file)
    assert message == (
        f"{path}: refusing to load pickled object 'os.system' "
        "(only numpy arrays, torch tensors and builtins are allowed)"
    )
    assert not pwned.exists()


class Reduces:
    def __init__(self, func, *args) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize(
    "func, args, name",
    [
        (eval, ("1 + 1",), "builtins.eval"),
        (getattr, ("text", "upper"), "builtins.getattr"),
        (subprocess.Popen, (["true"],), "subprocess.Popen"),
        (torch.load, ("x.pt",), "torch.serialization.load"),
    ],
)
def test_dangerous_callables_are_refused(tmp_path, func, args, name):
    path = tmp_path / "bad.pkl"
    path.write_bytes(pickle.dumps([1, Reduces(func, *args)], protocol=4))
    assert_one_line_error(path, load_pickle_restricted, f"refusing to load pickled object '{name}'")


def phc_entry(motion: RawMotion, as_torch: bool) -> dict:
    pos = torch.from_numpy(motion.root_pos.astype(np.float64)) if as_torch else motion.root_pos.astype(np.float64)
    return {
        "root_trans_offset": pos,
        "pose_quat_global": motion.global_rot.astype(np.float64),
        "pose_aa": np.zeros((motion.num_frames, 72)),
        "beta": np.zeros(16),
        "gender": "neutral",
        "fps": np.int64(int(motion.fps)),
    }


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_plain_pickle_of_phc_dict_with_tensors_and_arrays_loads(tmp_path, protocol):
    a, b = random_motion("a", 6, 30.0, seed=5), random_motion("b", 4, 60.0, seed=6)
    data = {"0-a": phc_entry(a, as_torch=True), "1-b": phc_entry(b, as_torch=False)}
    del data["1-b"]["fps"]  # a missing fps means 30
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    loaded = load_phc_pkl(path)
    assert [(m.key, m.fps, m.num_frames) for m in loaded] == [("0-a", 30.0, 6), ("1-b", 30.0, 4)]
    np.testing.assert_allclose(loaded[0].root_pos, a.root_pos, atol=1e-6)
    np.testing.assert_allclose(loaded[1].global_rot, b.global_rot, atol=1e-6)


def test_transposed_tensor_is_rebuilt_with_its_strides(tmp_path):
    tensor = torch.arange(12, dtype=torch.float32).reshape(3, 4).t()[1:]
    path = tmp_path / "t.pkl"
    path.write_bytes(pickle.dumps({"t": tensor}))
    torch.testing.assert_close(load_pickle_restricted(path)["t"], tensor)


def test_phc_dict_missing_fields_is_reported(tmp_path):
    path = tmp_path / "m.pkl"
    path.write_bytes(pickle.dumps({"walk": {"root_trans_offset": np.zeros((4, 3))}}))
    assert_one_line_error(path, load_motion_file, "motion 'walk'", "missing key(s) pose_quat_global")
    path.write_bytes(pickle.dumps([1, 2, 3]))
    assert_one_line_error(path, load_motion_file, "expected a dict of motions, got list")


class NumpyArrayWrapper:
    """Pickled under joblib's name by :class:`JoblibLikePickler` (joblib itself is not installed)."""

    def __init__(self, **state) -> None:
        self.__dict__.update(state)


class JoblibLikePickler(pickle._Pickler):
    """Writes arrays the way ``joblib.dump`` does: a wrapper object, then padding and raw bytes in the stream."""

    def __init__(self, file, alignment=16) -> None:
        super().__init__(file, protocol=4)
        self.file, self.alignment = file, alignment

    def save_global(self, obj, name=None):
        if obj is NumpyArrayWrapper:
            self.save("joblib.numpy_pickle")
            self.save("NumpyArrayWrapper")
            self.write(pickle.STACK_GLOBAL)
            self.memoize(obj)
            return
        super().save_global(obj, name)

    def save(self, obj, save_persistent_id=True):
        if not isinstance(obj, np.ndarray):
            return super().save(obj, save_persistent_id)
        order = "F" if obj.flags.f_contiguous and not obj.flags.c_contiguous else "C"
        wrapper = NumpyArrayWrapper(subclass=np.ndarray, shape=obj.shape, order=order, dtype=obj.dtype,
                                    allow_mmap=True, numpy_array_alignment_bytes=self.alignment)  # fmt: skip
        super().save(wrapper)
        self.framer.commit_frame(force=True)
        padding = self.alignment - (self.file.tell() + 1) % self.alignment
        self.file.write(bytes([padding]) + b"\xff" * padding)
        self.file.write(obj.tobytes(order=order))


def joblib_like_dump(obj, path: Path, compress=None) -> None:
    import io

    buffer = io.BytesIO()
    JoblibLikePickler(buffer).dump(obj)
    data = buffer.getvalue()
    path.write_bytes({None: lambda d: d, "zlib": zlib.compress, "gzip": gzip.compress}[compress](data))


@pytest.mark.parametrize("compress", [None, "zlib", "gzip"])
def test_joblib_array_wrappers_are_read_from_the_stream(tmp_path, compress):
    a = random_motion("a", 8, seed=7)
    entry = phc_entry(a, as_torch=False)
    entry["pose_quat_global"] = np.asfortranarray(entry["pose_quat_global"])
    path = tmp_path / "joblib.pkl"
    joblib_like_dump({"0-a": entry, "extra": {"root_trans_offset": np.eye(3)[:2], "pose_quat_global": np.tile(
        np.array([0.0, 0.0, 0.0, 1.0]), (2, 24, 1))}}, path, compress)  # fmt: skip
    loaded = load_motion_file(path)
    assert [m.key for m in loaded] == ["0-a", "extra"]
    np.testing.assert_allclose(loaded[0].global_rot, a.global_rot, atol=1e-6)
    np.testing.assert_allclose(loaded[0].root_pos, a.root_pos, atol=1e-6)
    np.testing.assert_array_equal(loaded[1].root_pos, np.eye(3, dtype=np.float32)[:2])


def test_joblib_object_array_is_refused(tmp_path):
    path = tmp_path / "objects.pkl"
    buffer = open(path, "wb")
    with buffer:
        pickler = JoblibLikePickler(buffer)
        pickler.save = lambda obj, save_persistent_id=True: pickle._Pickler.save(pickler, obj, save_persistent_id)
        pickler.dump({"x": NumpyArrayWrapper(subclass=np.ndarray, shape=(2,), order="C", dtype=np.dtype(object))})
    assert_one_line_error(path, load_motion_file, "object arrays are not allowed")


def test_lz4_and_zip_payloads_get_a_clear_error(tmp_path):
    path = tmp_path / "m.pkl"
    path.write_bytes(b'\x04"M\x18' + os.urandom(32))
    assert_one_line_error(path, load_motion_file, "lz4")
    torch.save({"a": torch.zeros(2)}, path)
    assert_one_line_error(path, load_motion_file, "zip archive")


# ------------------------------------------------------------------ the real PHC sample


def test_real_phc_sample_loads():
    if not SAMPLE_PKL.exists():
        pytest.skip(f"{SAMPLE_PKL} not available")
    motions = load_motion_file(SAMPLE_PKL)
    assert len(motions) == 1
    motion = motions[0]
    assert motion.key == "0-cmu_mocap_05_06"
    assert motion.num_frames == 222 and motion.fps == 30.0
    assert motion.root_pos.shape == (222, 3) and motion.global_rot.shape == (222, 24, 4)
    info = motion_info(str(SAMPLE_PKL))
    assert info == [{"key": "0-cmu_mocap_05_06", "frames": 222, "fps": 30.0, "duration": pytest.approx(7.3667, 1e-4)}]


def test_print_motion_info_shows_motions_and_total(tmp_path, capsys):
    path = tmp_path / "m.npz"
    save_motions_npz(path, [random_motion("walk", 31), random_motion("run", 61, 60.0)])
    print_motion_info(str(path))
    out = capsys.readouterr().out
    assert "walk" in out and "run" in out
    assert "total: 2 motions" in out and "92" in out and "2.00" in out
