"""PHC / puffer-phc ``.pkl`` motion files, read through a restricted unpickler (joblib not needed).

PHC writes ``{key: {root_trans_offset [T, 3], pose_quat_global [T, 24, 4] xyzw, fps, pose_aa, beta, ...}}``
with ``joblib.dump``: a pickle stream, often zlib-compressed, in which numpy arrays appear as
``joblib.numpy_pickle.NumpyArrayWrapper`` objects whose raw bytes follow the wrapper's BUILD opcode in
the stream, and torch tensors as ``torch._utils._rebuild_tensor_v2`` over a storage serialized by
``torch.storage._load_from_bytes`` (torch's legacy, non-zip format: a few small pickles + raw bytes).

A pickle can run any importable callable, so :class:`RestrictedUnpickler` resolves only the names needed
to rebuild numpy arrays / dtypes, torch tensors and builtin containers (mostly to small re-implementations
in this file) and refuses everything else *before* anything runs. Torch's own ``torch.load(weights_only=True)``
is not used for the nested storages: its legacy-format path had bypasses in the torch versions Isaac Gym users run.
"""

from __future__ import annotations

import _compat_pickle
import builtins
import bz2
import collections
import gzip
import io
import lzma
import pickle
import struct
import zlib
from pathlib import Path
from typing import IO, Any, Callable, Dict, List, Tuple

import numpy as np
import torch

from phc_lightning.motion.raw_motion import MotionFileError, PathLike, RawMotion, check_unique_keys, validate_motion

DEFAULT_FPS = 30.0
# torch's legacy serialization header (torch/serialization.py).
_TORCH_MAGIC = 0x1950A86A20F9469CFC6C
_TORCH_PROTOCOL = 1001
_TORCH_STORAGE_DTYPES: Dict[str, torch.dtype] = {
    "DoubleStorage": torch.float64, "FloatStorage": torch.float32, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool, "UntypedStorage": torch.uint8,
}  # fmt: skip


class _Refused(pickle.UnpicklingError):
    """A pickle asked for a global outside the allowlist (message already in final form)."""


# ---------------------------------------------------------------------------------------------------------
# Safe stand-ins for the callables a pickle of numpy arrays / torch tensors names.


def _check_dtype(dtype: Any) -> np.dtype:
    if not isinstance(dtype, np.dtype):
        raise pickle.UnpicklingError(f"expected a numpy dtype, got {type(dtype).__name__}")
    if dtype.hasobject:
        raise pickle.UnpicklingError("numpy object arrays are not allowed (they would need a nested, unchecked pickle)")
    return dtype


def _np_reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    """``numpy.core.multiarray._reconstruct``: an empty ndarray that BUILD then fills via ``__setstate__``."""
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError("only plain numpy.ndarray can be rebuilt")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


def _np_scalar(dtype: Any, data: Any = None) -> Any:
    """``numpy.core.multiarray.scalar``: a numpy scalar from its raw bytes."""
    dtype = _check_dtype(dtype)
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise pickle.UnpicklingError(f"bad numpy scalar payload for dtype {dtype}")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _np_frombuffer(buf: Any, dtype: Any, shape: Any, order: str) -> np.ndarray:
    """``numpy.core.numeric._frombuffer`` (pickle protocol 5 in-band buffers)."""
    array = np.frombuffer(buf, dtype=_check_dtype(dtype))
    if order == "F":
        return array.reshape(tuple(shape)[::-1]).T.copy()
    return array.reshape(tuple(shape)).copy()


def _codecs_encode(text: Any, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes (latin-1 only, no codec lookups)."""
    if not isinstance(text, str) or encoding != "latin1":
        raise pickle.UnpicklingError("_codecs.encode is only allowed for latin1 bytes")
    return text.encode("latin1")


def _rebuild_tensor(storage: Any, storage_offset: int, size: Tuple[int, ...], stride: Tuple[int, ...]) -> torch.Tensor:
    """``torch._utils._rebuild_tensor``: a strided view of a flat storage, bounds-checked, then copied."""
    if not isinstance(storage, torch.Tensor) or storage.dim() != 1:
        raise pickle.UnpicklingError("tensor storage must come from torch.storage._load_from_bytes")
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    offset = int(storage_offset)
    if len(size) != len(stride) or offset < 0 or min(size + stride, default=0) < 0:
        raise pickle.UnpicklingError(f"bad tensor geometry size={size} stride={stride} offset={offset}")
    if 0 not in size and offset + sum((n - 1) * s for n, s in zip(size, stride)) >= storage.numel():
        raise pickle.UnpicklingError(f"tensor of size {size} does not fit in a storage of {storage.numel()} elements")
    return torch.as_strided(storage, size, stride, offset).clone()


def _rebuild_tensor_v2(storage: Any, storage_offset: int, size: Any, stride: Any, *unused: Any) -> torch.Tensor:
    """``torch._utils._rebuild_tensor_v2`` (requires_grad, hooks and metadata are dropped)."""
    return _rebuild_tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data: Any, *unused: Any) -> torch.Tensor:
    """``torch._utils._rebuild_parameter``: the parameter's data as a plain tensor."""
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError("a torch parameter must wrap a tensor")
    return data


class _StorageType:
    """Marker for ``torch.<X>Storage`` names inside torch's legacy format (not callable)."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


class _NumpyArrayWrapper:
    """Stand-in for ``joblib.numpy_pickle.NumpyArrayWrapper``: describes the array whose bytes follow."""

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise pickle.UnpicklingError("bad NumpyArrayWrapper state")
        self.dtype = _check_dtype(state.get("dtype"))
        self.shape = tuple(int(n) for n in state.get("shape", ()))
        self.order = state.get("order", "C")
        self.alignment = state.get("numpy_array_alignment_bytes")
        if state.get("subclass", np.ndarray) is not np.ndarray or self.order not in ("C", "F"):
            raise pickle.UnpicklingError("unsupported NumpyArrayWrapper (subclass or order)")
        if min(self.shape, default=0) < 0:
            raise pickle.UnpicklingError(f"bad NumpyArrayWrapper shape {self.shape}")

    def read_array(self, read: Callable[[int], bytes]) -> np.ndarray:
        """Read the raw array bytes that joblib wrote right after this wrapper (like joblib's ``read_array``)."""
        if self.alignment is not None:
            padding = read(1)
            if len(padding) != 1 or len(read(padding[0])) != padding[0]:
                raise pickle.UnpicklingError("truncated array padding")
        count = 1
        for n in self.shape:  # Python ints: no overflow on absurd shapes
            count *= n
        data = read(count * self.dtype.itemsize)
        if len(data) != count * self.dtype.itemsize:
            raise pickle.UnpicklingError(f"truncated array data (expected {count * self.dtype.itemsize} bytes)")
        array = np.frombuffer(data, dtype=self.dtype, count=count)
        if self.order == "F":
            return array.reshape(self.shape[::-1]).T.copy()
        return array.reshape(self.shape).copy()


# (module, name) -> replacement. Everything not listed is refused.
_ALLOWED: Dict[Tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("_codecs", "encode"): _codecs_encode,
    ("joblib.numpy_pickle", "NumpyArrayWrapper"): _NumpyArrayWrapper,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "memmap"): np.ndarray,  # joblib's subclass marker; rebuilt as a plain array
    ("numpy", "dtype"): np.dtype,
}
for _core in ("numpy.core", "numpy._core"):  # numpy 1.x and 2.x module names
    _ALLOWED[(_core + ".multiarray", "_reconstruct")] = _np_reconstruct
    _ALLOWED[(_core + ".multiarray", "scalar")] = _np_scalar
    _ALLOWED[(_core + ".numeric", "_frombuffer")] = _np_frombuffer
for _name in ("set", "frozenset", "bytearray", "bytes", "complex", "slice", "list", "dict", "tuple", "int", "float",
              "str", "bool"):  # fmt: skip
    _ALLOWED[("builtins", _name)] = getattr(builtins, _name)
for _name, _dtype in _TORCH_STORAGE_DTYPES.items():
    _ALLOWED[("torch", _name)] = _StorageType(_dtype)


class RestrictedUnpickler(pickle._Unpickler):
    """Pure-Python unpickler that resolves only allowlisted globals.

    The pure-Python :class:`pickle._Unpickler` (which joblib also uses) is needed because joblib's array bytes
    sit in the raw stream after a BUILD opcode, and only its dispatch table can be extended to read them.
    """

    dispatch = pickle._Unpickler.dispatch.copy()

    def __init__(self, file: IO[bytes], path: PathLike) -> None:
        super().__init__(file)
        self._path = path
        self._storages: Dict[str, torch.Tensor] = {}

    def find_class(self, module: str, name: str) -> Any:
        """Return the safe stand-in for ``module.name`` or refuse it."""
        if self.proto < 3:  # protocol 0-2 pickles name Python 2 modules (e.g. __builtin__)
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        if (module, name) == ("torch.storage", "_load_from_bytes"):
            return self._load_torch_storage
        if (module, name) not in _ALLOWED:
            raise _Refused(
                f"{self._path}: refusing to load pickled object '{module}.{name}' "
                "(only numpy arrays, torch tensors and builtins are allowed)"
            )
        return _ALLOWED[(module, name)]

    def persistent_load(self, pid: Any) -> Any:
        """Storages referenced by torch's legacy format: ``('storage', type, key, location, numel, view)``."""
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise pickle.UnpicklingError(f"unsupported persistent id {type(pid).__name__}")
        if len(pid) > 5 and pid[5] is not None:
            raise pickle.UnpicklingError("storage views are not supported")
        key = str(pid[2])
        if key not in self._storages:
            self._storages[key] = torch.empty(0, dtype=pid[1].dtype)  # placeholder, filled after the pickle
        return key

    def _load_build(self) -> None:
        pickle._Unpickler.load_build(self)
        if isinstance(self.stack[-1], _NumpyArrayWrapper):
            self.stack[-1] = self.stack[-1].read_array(self.read)

    dispatch[pickle.BUILD[0]] = _load_build

    def _load_torch_storage(self, data: Any) -> torch.Tensor:
        """``torch.storage._load_from_bytes``: parse torch's legacy format into a flat tensor."""
        if not isinstance(data, bytes):
            raise pickle.UnpicklingError("torch storage payload must be bytes")
        stream = io.BytesIO(data)

        def load() -> Any:
            inner = RestrictedUnpickler(stream, self._path)
            inner._storages = storages
            return inner.load()

        storages: Dict[str, torch.Tensor] = {}
        if load() != _TORCH_MAGIC or load() != _TORCH_PROTOCOL:
            raise pickle.UnpicklingError("not a torch legacy storage payload")
        sys_info = load()
        if not isinstance(sys_info, dict) or not sys_info.get("little_endian", False):
            raise pickle.UnpicklingError("only little-endian torch storages are supported")
        root_key = load()
        keys = load()
        if not isinstance(keys, list) or sorted(map(str, keys)) != sorted(storages) or root_key not in storages:
            raise pickle.UnpicklingError("inconsistent torch storage keys")
        for key in keys:
            (numel,) = struct.unpack("<q", stream.read(8))
            dtype = storages[key].dtype
            nbytes = numel * torch.empty((), dtype=dtype).element_size()
            raw = stream.read(nbytes)
            if numel < 0 or len(raw) != nbytes:
                raise pickle.UnpicklingError("truncated torch storage")
            storages[key] = torch.frombuffer(bytearray(raw), dtype=dtype) if numel else torch.empty(0, dtype=dtype)
        return storages[root_key]


def _decompress(path: Path, head: bytes, data: bytes) -> bytes:
    """Undo joblib's whole-file compression, recognized by its magic prefix; plain pickles pass through."""
    if head.startswith(b"x"):  # zlib
        return zlib.decompress(data)
    if head.startswith(b"\x1f\x8b"):
        return gzip.decompress(data)
    if head.startswith(b"BZ"):
        return bz2.decompress(data)
    if head.startswith(b"\xfd7zXZ") or head.startswith(b"]\x00\x00"):
        return lzma.decompress(data)
    if head.startswith(b'\x04"M\x18'):
        raise MotionFileError(f"{path}: lz4-compressed joblib files are not supported; re-save with compress='zlib'")
    if head.startswith(b"PK"):
        raise MotionFileError(f"{path}: is a zip archive (torch.save or .npz?), not a PHC joblib pickle")
    return data


def load_pickle_restricted(path: PathLike) -> Any:
    """Unpickle a (joblib) pickle file, rebuilding only numpy arrays, torch tensors and builtins.

    Raises:
        MotionFileError: the file is missing, not a pickle, truncated, or names a refused global.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise MotionFileError(f"{path}: cannot read ({e.strerror or e})") from e
    try:
        data = _decompress(path, data[:6], data)
    except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError) as e:
        if isinstance(e, MotionFileError):
            raise
        raise MotionFileError(f"{path}: corrupt compressed pickle ({' '.join(str(e).split())})") from e
    try:
        return RestrictedUnpickler(io.BytesIO(data), path).load()
    except _Refused as e:
        raise MotionFileError(str(e)) from None
    except MotionFileError:
        raise
    except Exception as e:  # untrusted bytes can break the unpickler in many ways; all of them mean "corrupt"
        detail = " ".join(str(e).split()) or type(e).__name__
        if isinstance(e, EOFError):
            detail = "unexpected end of file"
        raise MotionFileError(f"{path}: not a valid pickle ({detail})") from None


def phc_dict_to_motions(path: PathLike, data: Any) -> List[RawMotion]:
    """Convert an unpickled PHC motion dict to validated :class:`RawMotion` s.

    Args:
        path: source file (for messages; a single-motion dict is keyed by the file's stem).
        data: ``{key: {"root_trans_offset": [T, 3], "pose_quat_global": [T, 24, 4] xyzw, "fps": ...}}``
            with torch tensors or numpy arrays; a missing ``fps`` means 30.
    """
    path = Path(path)
    if not isinstance(data, dict):
        raise MotionFileError(f"{path}: expected a dict of motions, got {type(data).__name__}")
    if "pose_quat_global" in data:  # a single motion's dict, not keyed
        data = {path.stem: data}
    if not data:
        raise MotionFileError(f"{path}: contains no motions")
    motions = []
    for key, entry in data.items():
        if not isinstance(entry, dict):
            raise MotionFileError(f"{path}: motion {key!r} is a {type(entry).__name__}, expected a dict")
        missing = [k for k in ("root_trans_offset", "pose_quat_global") if k not in entry]
        if missing:
            raise MotionFileError(f"{path}: motion {key!r} is missing key(s) {', '.join(missing)}")
        fps = entry.get("fps", DEFAULT_FPS)
        motions.append(validate_motion(path, str(key), fps, entry["root_trans_offset"], entry["pose_quat_global"]))
    check_unique_keys(path, [m.key for m in motions])
    return motions


def load_phc_pkl(path: PathLike) -> List[RawMotion]:
    """Load a PHC / puffer-phc ``.pkl`` motion file safely (see the module docstring)."""
    return phc_dict_to_motions(path, load_pickle_restricted(path))
