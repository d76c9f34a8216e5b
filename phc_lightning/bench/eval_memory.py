"""``phc bench eval_memory``: memory of the PHC evaluation on a large motion set.

Builds ``num_motions`` motions of ``frames`` frames each (the bundled ``stand`` looped), plays them as ``phc validate``
does (deterministic, every motion once, full length: here with a failure distance no motion reaches), and reports
the process memory: after the motions are loaded, and the peak while playing. As in ``phc validate``, the motions are
held as loaded (an ``index_only`` library) and per-frame buffers are built for one chunk of ``num_envs`` motions at a
time; evaluation errors are summed frame by frame as motions play. So memory grows with neither the number of
motions beyond their raw frames nor the motions' length beyond one chunk.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import resource
import tempfile
import threading
import time
from typing import Dict, List, Optional

import numpy as np
import psutil
import torch

from phc_lightning.evaluation.playback import EvalDataset
from phc_lightning.learner.module import PHCModule
from phc_lightning.motion import BUNDLED_MOTIONS
from phc_lightning.motion.formats import load_motion_file, save_motions_npz
from phc_lightning.motion.library import MotionLibrary, release_freed_heap
from phc_lightning.motion.raw_motion import RawMotion
from phc_lightning.sim.factory import make_backend
from phc_lightning.task.config import TaskConfig
from phc_lightning.task.env import HumanoidTracking

GIB = 1024.0**3


def long_motions(num_motions: int, frames: int) -> List[RawMotion]:
    """``num_motions`` copies of the bundled ``stand`` looped to ``frames`` frames (its pose is the same at both ends,
    so the loop is seamless). Each motion has arrays of its own, as motions read from a file do."""
    stand = next(m for m in load_motion_file(BUNDLED_MOTIONS) if m.key == "stand")
    index = np.arange(frames) % stand.num_frames
    return [RawMotion(f"stand_{i:05d}", stand.fps, stand.root_pos[index], stand.global_rot[index])
            for i in range(num_motions)]


def _write_long_motions(path: str, num_motions: int, frames: int) -> None:
    save_motions_npz(path, long_motions(num_motions, frames))


class _PeakRSS:
    """Samples the resident set size in a thread; ``peak`` is the largest value seen since ``start``."""

    def __init__(self, interval: float = 0.02) -> None:
        self.process = psutil.Process()
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self) -> _PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


def bench_eval_memory(
    num_motions: int = 1000, frames: int = 2000, num_envs: int = 64, chunks: Optional[int] = 1,
    num_threads: Optional[int] = None,
) -> Dict[str, float]:
    """Play ``chunks`` chunks of ``num_envs`` motions (None: all) and print/return the memory figures in GiB."""
    process = psutil.Process()
    with tempfile.TemporaryDirectory() as tmp:
        # Through a file, as `phc validate --data.motion_file` reads one. A child process writes it, so that this
        # process's peak is that of a `phc validate` reading the file, not of the benchmark generating it.
        path = os.path.join(tmp, "long_motions.npz")
        writer = multiprocessing.get_context("fork").Process(
            target=_write_long_motions, args=(path, num_motions, frames)
        )
        writer.start()
        writer.join()
        if writer.exitcode != 0:
            raise RuntimeError(f"writing the benchmark motions failed (exit code {writer.exitcode})")
        gc.collect()
        release_freed_heap()
        start_rss = process.memory_info().rss
        library = MotionLibrary(path, index_only=True)
    library_rss = process.memory_info().rss
    # A failure distance no motion reaches: every motion plays its full length.
    task = TaskConfig(eval_failure_distance=1e3, termination_distance=1e3)
    first = library.subset([0])  # as phc validate: evaluation brings each chunk's motions
    env = HumanoidTracking(make_backend("mujoco", num_envs, num_threads=num_threads), first, task)
    module = PHCModule(obs_dim=env.obs_dim, residual_actions=True, action_scale=0.5, dof_action_scale={},
                       actor_hidden=[64], critic_hidden=[64])
    module.eval()
    played, steps = 0, 0
    started = time.perf_counter()
    with _PeakRSS() as peak, torch.no_grad():
        module.on_validation_epoch_start()
        for index, chunk in enumerate(EvalDataset(env, lambda: module, zero_actions=True, motions=library)):
            module.validation_step(chunk)
            played += chunk["motion_ids"].numel()
            steps = max(steps, int(chunk["lengths"].max()))
            if chunks is not None and index + 1 >= chunks:
                break
        summary, _ = module.eval_results()
    env.close()
    out = {
        "motions": float(num_motions),
        "frames_per_motion": float(frames),
        "library_frames": float(library.total_frames),
        "motions_played": float(played),
        "steps_per_motion_played": float(steps),
        "rss_start_gib": start_rss / GIB,
        "rss_after_library_gib": library_rss / GIB,
        "peak_rss_while_playing_gib": peak.peak / GIB,
        "playing_increase_gib": (peak.peak - library_rss) / GIB,
        "process_peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB,
        "play_seconds": time.perf_counter() - started,
        "success_rate": float(summary["success_rate"]),
    }
    for key, value in out.items():
        print(f"{key:>28}: {value:,.3f}")
    return out
