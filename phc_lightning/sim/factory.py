"""Pick a physics backend by name; each backend is imported only when chosen."""

from __future__ import annotations

from typing import Union

import torch

from phc_lightning.sim.base import PhysicsBackend

BACKENDS = ("mujoco", "mujoco_warp", "isaacgym")


def make_backend(name: str, num_envs: int, device: Union[str, torch.device] = "cpu", **kwargs) -> PhysicsBackend:
    """Build ``num_envs`` humanoids on backend ``name``.

    Args:
        name: ``"mujoco"`` (CPU, :class:`~phc_lightning.sim.mujoco_cpu.MujocoCPUBackend`); ``"mujoco_warp"`` and
            ``"isaacgym"`` are reserved names, not built yet.
        num_envs: number of simulated humanoids.
        device: device of the tensors the backend returns.
        **kwargs: passed to the backend's constructor (e.g. ``num_threads``, ``xml_path``).

    Raises:
        ValueError: unknown name, or a backend this build does not have.
    """
    if name == "mujoco":
        from phc_lightning.sim.mujoco_cpu import MujocoCPUBackend

        return MujocoCPUBackend(num_envs, device=device, **kwargs)
    if name in ("mujoco_warp", "isaacgym"):
        raise ValueError(f"backend {name!r} is not available in this build (available: 'mujoco')")
    raise ValueError(f"unknown backend {name!r}; known backends: {', '.join(BACKENDS)}")
