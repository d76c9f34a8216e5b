"""PHC's train / validation / test split of AMASS, by sub-dataset name.

The lists are PHC's (``scripts/data_process/convert_amass_data.py``): PHC trains on ``train`` and reports its
AMASS test numbers on ``test``. AMASS's SMPL-X release renamed some sub-datasets; :data:`ALIASES` maps those names
onto PHC's, so a tree of either release splits the same way.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

SPLITS: Dict[str, Tuple[str, ...]] = {
    "train": (
        "CMU", "MPI_Limits", "TotalCapture", "KIT", "EKUT", "TCD_handMocap", "BMLhandball", "DanceDB", "ACCAD",
        "BMLmovi", "BioMotionLab_NTroje", "Eyes_Japan_Dataset", "DFaust_67",
    ),
    "vald": ("HumanEva", "MPI_HDM05", "SFU", "MPI_mosh"),
    "test": ("Transitions_mocap", "SSM_synced"),
}  # fmt: skip
"""Sub-datasets of each PHC split."""

SPLIT_CHOICES = ("train", "vald", "test", "all")
"""Values of ``phc motions convert --split``; ``all`` also keeps sub-datasets no list names."""

ALIASES: Dict[str, str] = {
    "PosePrior": "MPI_Limits",
    "BMLrub": "BioMotionLab_NTroje",
    "DFaust": "DFaust_67",
    "HDM05": "MPI_HDM05",
    "MoSh": "MPI_mosh",
    "Transitions": "Transitions_mocap",
    "SSM": "SSM_synced",
}
"""AMASS SMPL-X sub-dataset names -> the SMPL-H names PHC's lists use."""

_KNOWN = {name for names in SPLITS.values() for name in names} | set(ALIASES)


def find_subdataset(parts: Sequence[str]) -> Optional[int]:
    """Index of the first path component that names an AMASS sub-dataset, or None."""
    for i, part in enumerate(parts):
        if part in _KNOWN:
            return i
    return None


def split_of(subdataset: Optional[str]) -> Optional[str]:
    """The PHC split (``train``, ``vald`` or ``test``) of a sub-dataset name; None for an unknown one."""
    if subdataset is None:
        return None
    name = ALIASES.get(subdataset, subdataset)
    for split, names in SPLITS.items():
        if name in names:
            return split
    return None


def in_split(subdataset: Optional[str], split: str) -> bool:
    """Whether files of ``subdataset`` belong to ``split`` (every file belongs to ``all``)."""
    if split not in SPLIT_CHOICES:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLIT_CHOICES)}")
    return split == "all" or split_of(subdataset) == split
