"""Pick a physics backend by name; each backend is imported only when chosen."""

from __future__ import annotations

from typing import Optional, Union

import torch

from phc_lightning.sim.base import PhysicsBackend

BACKENDS = ("mujoco", "mujoco_warp", "isaacgym")


def make_backend(
    name: str, num_envs: int, device: Optional[Union[str, torch.device]] = None, **kwargs
) -> PhysicsBackend:
    """Build ``num_envs`` humanoids on backend ``name``.

    Args:
        name: ``"mujoco"`` (CPU, :class:`~phc_lightning.sim.mujoco_cpu.MujocoCPUBackend`), ``"mujoco_warp"``
            (GPU or Warp's CPU device, :class:`~phc_lightning.sim.mujoco_warp.MujocoWarpBackend`, needs the
            ``[warp]`` extra); ``"isaacgym"`` is a reserved name, not built yet.
        num_envs: number of simulated humanoids.
        device: device of the tensors the backend returns (default: ``cpu`` for ``mujoco``; for ``mujoco_warp``
            CUDA when present, where its worlds live too).
        **kwargs: passed to the backend's constructor (e.g. ``num_threads``, ``xml_path``).

    Raises:
        ValueError: unknown name, or a backend this build does not have.
        ImportError: ``mujoco_warp`` without MuJoCo Warp installed (the message names the extra).
    """
    if name == "mujoco":
        from phc_lightning.sim.mujoco_cpu import MujocoCPUBackend

        return MujocoCPUBackend(num_envs, device=device or "cpu", **kwargs)
    if name == "mujoco_warp":
        from phc_lightning.sim.mujoco_warp import MujocoWarpBackend

        return MujocoWarpBackend(num_envs, device=device, **kwargs)
    if name == "isaacgym":
        raise ValueError(f"backend {name!r} is not available in this build (available: 'mujoco', 'mujoco_warp')")
    raise ValueError(f"unknown backend {name!r}; known backends: {', '.join(BACKENDS)}")
