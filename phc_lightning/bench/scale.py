"""``phc bench scale``: time and memory of training and evaluating on an AMASS-sized motion set.

Generates a set of AMASS's size from the bundled clips (:mod:`phc_lightning.motion.variations`: 11,000
motions, log-normal lengths around 10 s clipped to 1-60 s, at least 40 h at 30 fps; a native ``.npz``, reused when
``--motion_file`` names one that exists), then measures, each in a fresh process as ``phc fit`` / ``phc validate``
would run:

- **training**: the config's model and data on that file (``--data.num_envs``, default 64): the seconds from the
  file to the first training iteration's end, the library's bytes there (per-frame buffers of the resident motions,
  the motions as loaded, per-motion metadata), one resample (``MotionResampling.resample``: a new draw, its buffers
  rebuilt) and a second iteration on the new motions, and the process's peak resident memory;
- **evaluation**: ``phc validate``'s streamed evaluation (motions as loaded, per-frame buffers of one chunk of
  ``num_envs`` motions at a time): loading, one chunk played with the config's (untrained) policy, peak memory.

Figures go to the console and a JSON file; targets on the 2-core CPU of docs/results.md: library at training
<= 2 GB, process peak <= 6 GB, file -> first iteration <= 10 min.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import queue as queue_module
import resource
import tempfile
import time
from typing import Any, Dict, List, Optional

from rich.console import Console
from rich.table import Table

GB = 1e9
FRAME_BYTES = 1800
"""Bytes of one frame's per-frame buffers (what every frame cost before libraries streamed)."""


def bench_scale(config: str, num_motions: int = 11000, hours: float = 40.0, num_envs: int = 64,
                motion_file: Optional[str] = None, out: str = "runs/bench_scale.json",
                num_threads: Optional[int] = None, seed: int = 0) -> Dict[str, Any]:
    """Generate (or reuse) the set, measure training and evaluation in child processes, print and save the figures."""
    with tempfile.TemporaryDirectory() as tmp:
        path = motion_file or os.path.join(tmp, "amass_sized.npz")
        result: Dict[str, Any] = {"config": config, "num_envs": num_envs, "motion_file": motion_file}
        if not os.path.isfile(path):
            started = time.perf_counter()
            _in_child(_generate, path, num_motions, hours, seed)
            result["generate_seconds"] = time.perf_counter() - started
        result["file_bytes"] = os.path.getsize(path)
        result["training"] = _in_child(_training, config, path, num_envs, num_threads)
        result["evaluation"] = _in_child(_evaluation, config, path, num_envs, num_threads)
    _print(result)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    return result


def _in_child(target: Any, *args: Any) -> Dict[str, Any]:
    """``target(*args)`` in a fresh (spawned) process, so its peak memory is its own; returns its dict."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_run_and_send, args=(queue, target, args))
    process.start()
    while True:  # the result before join (a large message would block the child's exit), unless the child died
        try:
            out = queue.get(timeout=5.0)
            break
        except queue_module.Empty:
            if not process.is_alive():
                raise RuntimeError(f"{target.__name__}: the child process died (exit {process.exitcode})") from None
    process.join()
    if isinstance(out, BaseException):
        raise out
    return out


def _run_and_send(queue: Any, target: Any, args: Any) -> None:
    try:
        queue.put(target(*args))
    except BaseException as err:  # noqa: BLE001 - reported in the parent
        queue.put(RuntimeError(f"{target.__name__}: {type(err).__name__}: {err}"))


def _generate(path: str, num_motions: int, hours: float, seed: int) -> Dict[str, Any]:
    from phc_lightning.motion.variations import lognormal_lengths, write_varied_motions

    return {"frames": write_varied_motions(path, lognormal_lengths(num_motions, hours, seed=seed), seed=seed)}


def _rss() -> float:
    import psutil

    return psutil.Process().memory_info().rss / GB


def _peak_rss() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GB


def _library(motions: Any) -> Dict[str, float]:
    sizes = motions.memory_bytes()
    return {"frames_gb": sizes["frames"] / GB, "raw_gb": sizes["raw"] / GB, "metadata_gb": sizes["metadata"] / GB,
            "total_gb": sum(sizes.values()) / GB, "resident_motions": int(motions.resident_ids.numel()),
            "resident_frames": motions.resident_frames}


def _cli(config: str, path: str, num_envs: int, num_threads: Optional[int]) -> Any:
    from phc_lightning.run.lightning_cli import run_cli

    args = ["--config", config, "--data.motion_file", path, "--data.num_envs", str(num_envs)]
    if num_threads:
        args += ["--data.num_threads", str(num_threads)]
    return run_cli(args, run=False)  # the config's objects; nothing written, no run directory


def _training(config: str, path: str, num_envs: int, num_threads: Optional[int]) -> Dict[str, Any]:
    import lightning as L

    from callbacks import MotionResampling

    started = time.perf_counter()
    cli = _cli(config, path, num_envs, num_threads)
    dm = cli.datamodule
    configured = next((c for c in cli.trainer.callbacks if isinstance(c, MotionResampling)), MotionResampling())
    # Its failure history and draws, but no resample of its own: the probe times one, after the first iteration.
    resampling = MotionResampling(every_n_epochs=10**9, mode=configured.mode, decay=configured.decay,
                                  uniform_mix=configured.uniform_mix)
    out: Dict[str, Any] = {}

    class _Probe(L.Callback):
        def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            motions = dm.motions
            out.update(motions=motions.num_motions, frames=motions.total_frames,
                       hours=float(motions.lengths.sum()) / 3600.0, ready_seconds=time.perf_counter() - started,
                       all_frames_gb=motions.total_frames * FRAME_BYTES / GB)

        def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            now = time.perf_counter()
            if trainer.current_epoch == 0:
                out.update(first_iteration_seconds=now - started, rss_first_iteration_gb=_rss(),
                           library_first_iteration=_library(dm.motions))
                before = dm.motions.resident_ids.tolist()
                resampling.resample(trainer)
                out.update(resample_seconds=time.perf_counter() - now, library_after_resample=_library(dm.motions),
                           resident_motions_kept=len(set(before) & set(dm.motions.resident_ids.tolist())))
                out["_resampled"] = time.perf_counter()
            else:
                out.update(second_iteration_seconds=now - out.pop("_resampled"), rss_second_iteration_gb=_rss())

    trainer = L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
                        accelerator=cli.trainer.accelerator, devices=1, callbacks=[_Probe(), resampling])
    trainer.fit(cli.model, datamodule=dm)
    out["peak_rss_gb"] = _peak_rss()
    return out


def _evaluation(config: str, path: str, num_envs: int, num_threads: Optional[int]) -> Dict[str, Any]:
    import torch

    from phc_lightning.evaluation.playback import EvalDataset

    started = time.perf_counter()
    cli = _cli(config, path, num_envs, num_threads)
    dm, module = cli.datamodule, cli.model
    dm.setup("validate")  # as phc validate: the motions as loaded, an index-only library
    out: Dict[str, Any] = {"load_seconds": time.perf_counter() - started, "rss_loaded_gb": _rss(),
                           "library_loaded": _library(dm.motions)}
    module.eval()
    started = time.perf_counter()
    with torch.no_grad():
        module.on_validation_epoch_start()
        for chunk in EvalDataset(dm.env, lambda: module, motions=dm.motions):
            chunk_bytes = dm.env.motions.memory_bytes()["frames"]  # the chunk's own library, while it plays
            module.validation_step(chunk)
            out.update(chunk_motions=int(chunk["motion_ids"].numel()), chunk_frames_gb=chunk_bytes / GB,
                       chunk_longest_played_steps=int(chunk["lengths"].max()))
            break
    out.update(chunk_seconds=time.perf_counter() - started, library_while_playing_gb=(
        dm.motions.memory_bytes()["raw"] + dm.motions.memory_bytes()["metadata"]) / GB + out["chunk_frames_gb"],
        peak_rss_gb=_peak_rss())
    dm.env.close()
    return out


def _print(result: Dict[str, Any]) -> None:
    train, evaluation = result["training"], result["evaluation"]
    lib = train["library_first_iteration"]
    rows: List[List[str]] = [
        ["motion set", f"{train['motions']:,} motions, {train['hours']:.1f} h, {train['frames']:,} frames, "
                       f"file {result['file_bytes'] / GB:.2f} GB", ""],
        ["training: file -> first iteration", f"{train['first_iteration_seconds']:.0f} s "
                                              f"(ready to collect after {train['ready_seconds']:.0f} s)", "<= 600 s"],
        ["training: library at the first iteration",
         f"{lib['total_gb']:.2f} GB = raw {lib['raw_gb']:.2f} + buffers {lib['frames_gb']:.3f} "
         f"({lib['resident_motions']} motions) + metadata {lib['metadata_gb']:.4f}", "<= 2 GB"],
        ["  (every frame's buffers, as before)", f"{train['all_frames_gb']:.2f} GB", ""],
        ["training: a resample", f"{train['resample_seconds']:.1f} s, buffers "
                                 f"{train['library_after_resample']['frames_gb']:.3f} GB "
                                 f"({train['library_after_resample']['resident_motions']} motions, "
                                 f"{train['resident_motions_kept']} kept); next iteration "
                                 f"{train['second_iteration_seconds']:.1f} s", ""],
        ["training: process peak RSS", f"{train['peak_rss_gb']:.2f} GB", "<= 6 GB"],
        ["evaluation: load", f"{evaluation['load_seconds']:.0f} s, library "
                             f"{evaluation['library_loaded']['total_gb']:.2f} GB", ""],
        ["evaluation: one chunk", f"{evaluation['chunk_motions']} motions (longest played "
                                  f"{evaluation['chunk_longest_played_steps']} steps) in "
                                  f"{evaluation['chunk_seconds']:.0f} s; library "
                                  f"{evaluation['library_while_playing_gb']:.2f} GB (chunk buffers "
                                  f"{evaluation['chunk_frames_gb']:.3f})", ""],
        ["evaluation: process peak RSS", f"{evaluation['peak_rss_gb']:.2f} GB", ""],
    ]
    table = Table(title=f"phc bench scale: {result['config']}, {result['num_envs']} envs (GB = 1e9 bytes)")
    for column in ("quantity", "measured", "target (2-core CPU)"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)

    Console(width=160).print(table)
