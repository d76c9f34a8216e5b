"""``phc render --ckpt_path CKPT --out x.gif``: a checkpoint's deterministic policy on chosen motions, on video.

Each chosen motion is played once from t = 0 in the CPU tracking env under the evaluation rules (as ``phc
validate`` plays it), one env per motion, until it ends or fails. The simulated humanoid is drawn solid with the
reference as a translucent blue humanoid, overlaid (default) or beside it; motions follow one another.

Data settings (motion file, reference smoothing, task distances) come from ``--motion_file``, else the ``data``
section of ``--config``, else the checkpoint's own datamodule hyperparameters, else the bundled motions.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from phc_lightning.core.errors import ConfigError
from phc_lightning.deploy.motion_preview import select_motions, state_to_qpos
from phc_lightning.deploy.scene import HumanoidFilm, check_video_path, every_nth, write_video
from phc_lightning.learner.checkpoint import load_checkpoint_module
from phc_lightning.motion import BUNDLED_MOTIONS
from phc_lightning.motion.library import DEFAULT_MAX_DOF_VEL, DEFAULT_VELOCITY_SMOOTHING, MotionLibrary
from phc_lightning.sim.factory import make_backend
from phc_lightning.task.config import TaskConfig
from phc_lightning.task.env import HumanoidTracking

BESIDE_OFFSET = (0.0, 1.2, 0.0)
"""Where the reference is drawn in the ``beside`` layout, metres from its true position (to the humanoid's left)."""


def data_settings(ckpt: Dict[str, Any], config: Optional[str]) -> Dict[str, Any]:
    """The ``data`` hyperparameters to rebuild the env with: the config's over the checkpoint's.

    Raises:
        ConfigError: the config file is missing or not a YAML mapping.
    """
    settings = dict(ckpt.get("datamodule_hyper_parameters") or {})
    if config:
        import yaml  # jsonargparse's dependency

        path = Path(config)
        if not path.is_file():
            raise ConfigError(f"--config: no such file: {path}")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise ConfigError(f"--config: {path} is not valid YAML ({' '.join(str(err).split())})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"--config: {path} is not a phc config (no mapping at the top)")
        settings.update(loaded.get("data") or {})
    return settings


def _task_config(settings: Dict[str, Any]) -> TaskConfig:
    names = {f.name for f in dataclasses.fields(TaskConfig)}
    values = {k: v for k, v in settings.items() if k in names}  # older flat data settings
    values.update({k: v for k, v in (settings.get("task") or {}).items() if k in names})
    return TaskConfig(**values)


@torch.no_grad()
def play_and_record(env: HumanoidTracking, module: torch.nn.Module, motion_ids: List[int]) -> List[Dict[str, Any]]:
    """Play each motion once (one env each, eval rules) and record sim and reference ``qpos`` every step.

    Returns:
        Per motion: ``sim`` and ``ref`` ``[S, 76]`` qpos (S = steps before it ended), ``success`` (bool), ``steps``.
    """
    n = env.num_envs
    env.set_eval(True)
    obs = env.assign_motions(torch.tensor(motion_ids, dtype=torch.long))
    active = torch.ones(n, dtype=torch.bool)
    success = torch.zeros(n, dtype=torch.bool)
    sim_q: List[np.ndarray] = []
    ref_q: List[np.ndarray] = []
    alive: List[np.ndarray] = []
    max_steps = int(torch.ceil(env.motions.lengths[torch.tensor(motion_ids)] / env.control_dt).max()) + 2
    state = torch.zeros(n, module.actor_state_size)  # the actor's memory: the critic never runs here
    for _ in range(max_steps):
        sim_q.append(state_to_qpos(env.backend.state()))
        ref_q.append(state_to_qpos(env.motions.get_state(env.motion_ids, env.motion_times)))
        alive.append(active.numpy().copy())
        actions, state = module.act_deterministic(obs, state)
        result = env.step(module.pd_targets(actions, env.ref_next_dof_pos))
        state = state.masked_fill((result.terminated | result.truncated).unsqueeze(-1), 0.0)  # auto-reset envs
        finished = active & (result.terminated | result.truncated).cpu()
        success |= finished & (result.truncated & ~result.terminated & ~result.info["unstable"]).cpu()
        active &= ~finished
        obs = result.obs
        if not bool(active.any()):
            break
    mask = np.stack(alive)  # [S, N]
    out = []
    for e in range(n):
        rows = mask[:, e]
        out.append({
            "sim": np.stack(sim_q)[rows, e],
            "ref": np.stack(ref_q)[rows, e],
            "success": bool(success[e]),
            "steps": int(rows.sum()),
        })  # fmt: skip
    return out


def render_policy(
    ckpt_path: str,
    out: str,
    keys: Optional[Sequence[str]] = None,
    config: Optional[str] = None,
    motion_file: Optional[str] = None,
    layout: str = "overlay",
    fps: float = 30.0,
    width: int = 480,
    height: int = 360,
) -> List[Dict[str, Any]]:
    """Render the policy of ``ckpt_path`` on the chosen motions into ``out`` (GIF / MP4).

    Returns:
        Per motion ``{"key", "steps", "success"}`` in video order.

    Raises:
        ConfigError: bad checkpoint, config, layout or output; MotionFileError: bad motion file or key.
    """
    out_path = check_video_path(out)
    if layout not in ("overlay", "beside"):
        raise ConfigError(f"--layout must be 'overlay' or 'beside', got {layout!r}")
    if not fps > 0:
        raise ConfigError(f"--fps must be > 0, got {fps}")
    module, ckpt = load_checkpoint_module(ckpt_path)
    settings = data_settings(ckpt, config)
    source = motion_file or settings.get("motion_file") or BUNDLED_MOTIONS
    every_motion = MotionLibrary(
        source,
        velocity_smoothing=settings.get("velocity_smoothing", DEFAULT_VELOCITY_SMOOTHING),
        max_dof_vel=settings.get("max_dof_vel", DEFAULT_MAX_DOF_VEL),
        index_only=True,  # the run may have trained on all of AMASS: build only the chosen motions' buffers
    )
    chosen = select_motions(every_motion, keys, source)
    lib = every_motion.subset(chosen)
    ids = list(range(len(chosen)))
    try:
        task = _task_config(settings)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"data.task: {err}") from None
    env = HumanoidTracking(make_backend("mujoco", len(ids), num_threads=settings.get("num_threads")), lib, task)
    try:
        played = play_and_record(env, module, ids)
    finally:
        env.close()
    film = HumanoidFilm(width, height, ghost_offset=BESIDE_OFFSET if layout == "beside" else (0.0, 0.0, 0.0))
    try:
        frames = []
        for run in played:
            pairs = list(zip(run["sim"], run["ref"]))
            frames.extend(film.frame(q, ghost_qpos=r) for q, r in every_nth(pairs, 1.0 / env.control_dt, fps))
    finally:
        film.close()
    write_video(out_path, frames, fps)
    return [{"key": lib.keys[i], "steps": run["steps"], "success": run["success"]} for i, run in zip(ids, played)]
