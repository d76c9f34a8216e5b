"""PHC .pkl motion files through the restricted unpickler, and the real PHC sample."""

from __future__ import annotations

import gzip
import os
import pickle
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from phc_lightning.motion.formats import load_motion_file, save_motions_npz
from phc_lightning.motion.info import motion_info, print_motion_info
from phc_lightning.motion.pkl import load_phc_pkl, load_pickle_restricted
from phc_lightning.motion.raw_motion import RawMotion
from tests.helpers import CMU_PKL as SAMPLE_PKL
from tests.motion.test_formats import assert_one_line_error, random_motion

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
