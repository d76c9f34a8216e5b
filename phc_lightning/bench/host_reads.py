"""Counting host reads of tensors: every operation that, on a GPU, would make the host wait for the device.

Used by the tests (on the CPU) and by ``scripts/gpu_check.py sync`` (beside torch's CUDA sync debug mode, which sees
the syncs themselves but only on a GPU).

On a GPU each of these stalls the host until the queued kernels ran (``item``, ``bool(t)``, ``.tolist()``, ``.cpu()``,
``nonzero``, a boolean-mask index, ...), or copies host data to the device with a stream sync (``torch.tensor`` /
``torch.as_tensor`` of Python data, a list index). The same code on the CPU runs the same Python, so counting these
calls here tells which would sync there. A :class:`torch.overrides.TorchFunctionMode` sees every tensor method and
torch function the package calls (not the ones torch calls inside them).

The CPU MuJoCo backend exchanges numpy arrays with MuJoCo C every step: it reads PD targets and masks on the host by
nature (MuJoCo runs there), so calls made directly by ``sim/mujoco_cpu.py`` (and its steppers) are kept apart as
``exchange`` rather than counted: the exemption is by file, so nothing else can hide there, and the Warp backend has
none.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path
from typing import List, Optional, Tuple

import torch
from torch.overrides import TorchFunctionMode

ROOT = Path(__file__).resolve().parents[2]
"""The checkout (or install) holding ``phc_lightning/`` and ``callbacks/``: calls from there are counted."""
READS = {"item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__", "__index__", "nonzero", "argwhere",
         "masked_select", "unique", "unique_consecutive", "bincount"}
"""Calls whose result is a host value computed from device values."""
HOST_BACKEND = ("phc_lightning/sim/mujoco_cpu.py", "phc_lightning/sim/mujoco_steppers.py")


def _is_mask(index: object) -> bool:
    return isinstance(index, torch.Tensor) and index.dtype == torch.bool


def _is_host_data(index: object) -> bool:
    return isinstance(index, (list, tuple)) and any(isinstance(i, (int, list)) and not isinstance(i, bool)
                                                    for i in index)


def classify(name: str, args: tuple, kwargs: dict) -> Optional[str]:
    """The kind of host read of one torch call, or None."""
    if name in READS:
        return name
    if name == "to" and ("cpu" in args[1:2] or kwargs.get("device") == "cpu"):
        return "to(cpu)"
    if name in ("tensor", "as_tensor") and args and not isinstance(args[0], torch.Tensor):
        return f"{name}(host data)"
    if name in ("__getitem__", "__setitem__") and len(args) > 1:
        index = args[1] if isinstance(args[1], tuple) else (args[1],)
        if any(_is_mask(i) for i in index):
            return "mask index"
        if any(isinstance(i, list) for i in index) or (not isinstance(args[1], tuple) and _is_host_data(args[1])):
            return "list index"
    if name in ("index_put_", "index_put") and len(args) > 1 and any(_is_mask(i) for i in args[1]):
        return "mask index"
    return None


def _caller() -> Tuple[str, int]:
    """The innermost package file and line below the mode (tests excluded), relative to :data:`ROOT`."""
    frame = sys._getframe(2)
    # the package's own files only: a virtualenv inside the checkout (CI makes .venv there) is not the package
    package = tuple(str(ROOT / name) + os.sep for name in ("phc_lightning", "callbacks"))
    while frame is not None:
        path = frame.f_code.co_filename
        if path.startswith(package):
            return str(Path(path).relative_to(ROOT)), frame.f_lineno
        frame = frame.f_back
    return "<outside the package>", 0


class HostReads(TorchFunctionMode):
    """Records host reads as ``(kind, file:line)``; the CPU backend's own exchange goes to :attr:`exchange`."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: List[Tuple[str, str]] = []
        self.exchange: List[Tuple[str, str]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - torch's signature
        kwargs = kwargs or {}
        kind = classify(getattr(func, "__name__", ""), args, kwargs)
        if kind is not None:
            path, line = _caller()
            (self.exchange if path in HOST_BACKEND else self.reads).append((kind, f"{path}:{line}"))
        return func(*args, **kwargs)

    def summary(self) -> Counter:
        """How many reads of each kind at each place."""
        return Counter(f"{kind} at {where}" for kind, where in self.reads)
