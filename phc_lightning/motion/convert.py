"""``phc motions convert SRC OUT``: AMASS trees, PHC ``.pkl`` and native files to one native ``.npz`` at 30 fps.

``SRC`` is a directory (every AMASS ``.npz`` below it, optionally one PHC split of AMASS's sub-datasets), one
AMASS ``.npz``, a PHC ``.pkl`` or a native ``.npz``. Files that cannot be used (corrupt, too short, non-finite)
are skipped and listed with the reason; the rest are converted in a process pool, behind a progress bar, and
written in a stable order (sorted paths) so the same tree always gives the same file.

Motion keys follow PHC: ``0-<SubDataset>_<subject>_<file stem>`` (the path from the sub-dataset directory,
joined with ``_``), so keys of PHC's own lists (e.g. its occlusion list) match.
"""

from __future__ import annotations

import fnmatch
import multiprocessing
import os
import zipfile
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple, Union

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from phc_lightning.motion.amass import amass_to_motion
from phc_lightning.motion.amass_splits import SPLIT_CHOICES, find_subdataset, in_split
from phc_lightning.motion.formats import load_motion_file, save_motions_npz
from phc_lightning.motion.raw_motion import MotionFileError, PathLike, RawMotion
from phc_lightning.motion.resample import resample_motion

DEFAULT_FPS = 30.0
DEFAULT_MIN_FRAMES = 10  # PHC drops AMASS clips shorter than 10 frames at 30 fps
# Files in AMASS trees that hold body shapes, not motions.
_SHAPE_FILES = ("shape.npz", "neutral_stagei.npz", "female_stagei.npz", "male_stagei.npz")

# (path, key) of one AMASS file to convert.
Job = Tuple[str, str]
# (path, converted motions or the reason it was skipped)
JobResult = Tuple[str, Union[List[RawMotion], str]]


@dataclass
class ConversionReport:
    """What :func:`convert_motions` did.

    Attributes:
        out: the written file.
        motions: number of motions written.
        frames: total frames written.
        skipped: ``(path, reason)`` of every file that was not converted, in path order.
        outside_split: AMASS files left out because their sub-dataset is not in the chosen split.
    """

    out: str
    motions: int = 0
    frames: int = 0
    skipped: List[Tuple[str, str]] = field(default_factory=list)
    outside_split: int = 0


def amass_jobs(src: Path, split: str = "all") -> Tuple[List[Job], int]:
    """``(path, key)`` of every AMASS motion file under ``src`` in ``split``, sorted, and the number left out.

    Raises:
        ValueError: unknown split.
    """
    if split not in SPLIT_CHOICES:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLIT_CHOICES)}")
    files = sorted(p for p in src.rglob("*") if p.suffix.lower() == ".npz" and p.is_file())
    jobs, outside = [], 0
    for path in files:
        if path.name in _SHAPE_FILES or path.name.endswith("_shape.npz"):
            continue
        parts = (src.name,) + path.relative_to(src).parts
        start = find_subdataset(parts)
        subdataset = None if start is None else parts[start]
        if not in_split(subdataset, split):
            outside += 1
            continue
        rel = parts[start:] if start is not None else parts[1:]
        jobs.append((str(path), "0-" + "_".join(rel)[: -len(".npz")]))
    return jobs, outside


def convert_file(job: Job, target_fps: float = DEFAULT_FPS, min_frames: int = DEFAULT_MIN_FRAMES) -> JobResult:
    """Convert one file; never raises for a bad file but returns the reason (a worker must not die on one).

    AMASS files become one motion keyed ``job[1]``; PHC ``.pkl`` and native ``.npz`` files keep their keys and are
    resampled to ``target_fps``.
    """
    path, key = job
    try:
        if _is_native_or_pkl(path):
            motions = [resample_motion(m, target_fps) for m in load_motion_file(path)]
            short = [m.key for m in motions if m.num_frames < min_frames]
            if short:
                raise MotionFileError(f"{path}: motion {short[0]!r} too short at {target_fps:g} fps")
            return path, motions
        return path, [amass_to_motion(path, key, target_fps, min_frames)]
    except MotionFileError as e:
        return path, _reason(path, str(e))
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        return path, f"{type(e).__name__}: {' '.join(str(e).split())}"


def convert_motions(
    src: PathLike,
    out: PathLike,
    split: str = "all",
    workers: Optional[int] = None,
    target_fps: float = DEFAULT_FPS,
    min_frames: int = DEFAULT_MIN_FRAMES,
    console: Optional[Console] = None,
    keys: Optional[Sequence[str]] = None,
    exclude: Sequence[str] = (),
) -> ConversionReport:
    """Convert ``src`` (directory tree or one file) into the native file ``out``; see the module docstring.

    Args:
        src: AMASS directory tree, AMASS ``.npz``, PHC ``.pkl`` or native ``.npz``.
        out: destination ``.npz``.
        split: PHC split of AMASS sub-datasets to keep (``train``, ``vald``, ``test``, ``all``); trees only.
        workers: processes (default: up to 8, one per core); 1 converts in this process.
        target_fps: frame rate of the written motions.
        min_frames: motions with fewer frames at ``target_fps`` are skipped.
        console: where the progress bar and the skipped-file list go.
        keys: keep only the motions whose key matches one of these shell patterns (``fnmatch``, e.g.
            ``'*walk_turn*'``); None keeps all. A pattern that matches nothing is an error.
        exclude: then drop the motions whose key matches one of these patterns (e.g. held-out clips).

    Raises:
        MotionFileError: ``src`` is missing, ``out`` is not a ``.npz``, or no motion could be converted (the
            message then gives the first reason).
    """
    src_path, out_path = Path(src), Path(out)
    console = console or Console(stderr=True)
    if out_path.suffix.lower() != ".npz":
        raise MotionFileError(f"{out_path}: native motion files must end in .npz")
    if not src_path.exists():
        raise MotionFileError(f"{src_path}: no such file or directory")
    report = ConversionReport(out=str(out_path))
    if src_path.is_dir():
        jobs, report.outside_split = amass_jobs(src_path, split)
    else:
        jobs = [(str(src_path), "0-" + src_path.stem)]
    if not jobs:
        raise MotionFileError(f"{src_path}: no motion files found (split {split!r})")
    motions: List[RawMotion] = []
    for path, result in _run(jobs, target_fps, min_frames, workers, console):
        if isinstance(result, str):
            report.skipped.append((path, result))
        else:
            motions.extend(result)
    for path, reason in report.skipped:
        console.print(f"skipped {path}: {reason}", soft_wrap=True, markup=False, highlight=False)
    if not motions:
        first = report.skipped[0][1] if report.skipped else "nothing to convert"
        raise MotionFileError(f"{src_path}: no motion could be converted ({first})")
    motions = select_motions(src_path, motions, keys, exclude)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    save_motions_npz(out_path, motions)
    report.motions = len(motions)
    report.frames = int(sum(m.num_frames for m in motions))
    return report


def select_motions(src: PathLike, motions: List[RawMotion], keys: Optional[Sequence[str]],
                   exclude: Sequence[str]) -> List[RawMotion]:
    """The motions whose key matches a pattern of ``keys`` (all when None) and none of ``exclude``, in order.

    Raises:
        MotionFileError: a pattern matches no motion, or nothing is left.
    """
    for flag, patterns in (("--keys", keys or ()), ("--exclude", exclude)):
        for pattern in patterns:
            if not any(fnmatch.fnmatchcase(m.key, pattern) for m in motions):
                raise MotionFileError(f"{src}: {flag} {pattern!r} matches no motion key")
    kept = [m for m in motions if (keys is None or any(fnmatch.fnmatchcase(m.key, p) for p in keys))
            and not any(fnmatch.fnmatchcase(m.key, p) for p in exclude)]
    if not kept:
        raise MotionFileError(f"{src}: --keys / --exclude leave no motion")
    return kept


def _run(jobs: Sequence[Job], target_fps: float, min_frames: int, workers: Optional[int],
         console: Console) -> Iterator[JobResult]:  # fmt: skip
    """Results in job order, behind a progress bar; a process pool when there is more than one worker."""
    workers = workers or min(8, os.cpu_count() or 1)
    workers = max(1, min(int(workers), len(jobs)))
    columns = (TextColumn("converting"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("convert", total=len(jobs))
        if workers == 1:
            for job in jobs:
                yield convert_file(job, target_fps, min_frames)
                progress.advance(task)
            return
        # spawn: a forked child would inherit torch's thread pools mid-state; each worker runs one thread.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker) as pool:
            chunk = max(1, min(16, len(jobs) // (4 * workers)))
            results = pool.map(convert_file, jobs, [target_fps] * len(jobs), [min_frames] * len(jobs),
                               chunksize=chunk)  # fmt: skip
            for result in results:
                yield result
                progress.advance(task)


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _is_native_or_pkl(path: str) -> bool:
    """Whether ``path`` is a PHC ``.pkl`` or a phc-lightning ``.npz`` (else it is treated as AMASS)."""
    if path.lower().endswith(".pkl"):
        return True
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False
    return "format.npy" in names and "poses.npy" not in names


def _reason(path: str, message: str) -> str:
    """The reason part of a ``"<path>: <reason>"`` message."""
    prefix = f"{path}: "
    return message[len(prefix):] if message.startswith(prefix) else message
