"""MuJoCo CPU backend: N SMPL humanoids stepped on all cores.

Two steppers advance the N simulations; both give bit-identical results:

- ``"batch"`` (MuJoCo >= 4.0): :class:`mujoco.batch.Batch` with one persistent ``MjData`` per env, stepped on
  MuJoCo's native thread pool in one call per control step.
- ``"threads"`` (any MuJoCo 3.x, Python 3.8): one ``MjData`` per env, contiguous chunks of envs stepped on a
  Python thread pool (``mj_step1``/``mj_step2`` release the GIL).

Both end every control step with the position and velocity stages computed at the new state (as ``mj_step1``
does), so ``xpos``/``xquat``/``cvel`` describe the current ``qpos``/``qvel`` with no one-substep lag, at no
extra cost: the next step continues from those stages. (``mujoco.rollout`` is not used: its per-thread
``MjData`` would leave no per-env body state, which would have to be recomputed after every step.)

Conventions at this edge: MuJoCo quaternions are wxyz (the package's are xyzw); the free joint's ``qvel[0:3]``
is the world linear velocity of the pelvis origin and ``qvel[3:6]`` its angular velocity in the *pelvis frame*.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import mujoco
import numpy as np
import torch

from phc_lightning.core import skeleton
from phc_lightning.core.rotations import quat_normalize, quat_rotate_inverse
from phc_lightning.sim.base import PhysicsBackend, SimState, check_state_shapes
from phc_lightning.sim.mujoco_steppers import BatchStepper, ThreadStepper, mj_batch

Tensor = torch.Tensor

DEFAULT_XML = Path(__file__).resolve().parents[1] / "assets" / "smpl_humanoid.xml"
NQ = 7 + skeleton.NUM_DOFS
NV = 6 + skeleton.NUM_DOFS
MAX_QVEL = 1e4  # |qvel| above this (m/s or rad/s) counts as an explosion
MAX_ROOT_DIST = 1e3  # metres from the origin


def default_num_threads() -> int:
    """CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def load_model(xml_path: Optional[Union[str, Path]] = None) -> mujoco.MjModel:
    """Compile the humanoid MJCF and check it has the SMPL layout of :mod:`phc_lightning.core.skeleton`.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the model's bodies, joints or actuators do not match the skeleton.
    """
    path = Path(xml_path) if xml_path is not None else DEFAULT_XML
    if not path.is_file():
        raise FileNotFoundError(f"{path}: humanoid MJCF not found")
    model = mujoco.MjModel.from_xml_path(str(path))
    names = tuple(model.body(i).name for i in range(1, model.nbody))
    if names != skeleton.BODY_NAMES:
        raise ValueError(f"{path}: bodies {names} differ from skeleton.BODY_NAMES")
    if model.nq != NQ or model.nv != NV or model.nu != skeleton.NUM_DOFS:
        got = f"{model.nq}, {model.nv}, {model.nu}"
        raise ValueError(f"{path}: need nq={NQ}, nv={NV}, nu={skeleton.NUM_DOFS}, got {got}")
    return model


def body_state_from_mujoco(
    xpos: np.ndarray, xquat: np.ndarray, cvel: np.ndarray, root_com: np.ndarray
) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """World pose and velocity of every body origin from MuJoCo's derived fields, vectorized.

    Args:
        xpos: body origins ``(N, B, 3)``.
        xquat: body orientations, wxyz ``(N, B, 4)``.
        cvel: ``[angular, linear]`` spatial velocity ``(N, B, 6)`` of each body, world-aligned, taken at the
            centre of mass of the kinematic tree (``subtree_com`` of the root body).
        root_com: that centre of mass ``(N, 1, 3)``.

    Returns:
        ``pos (N, B, 3)``, ``rot (N, B, 4)`` xyzw, ``vel (N, B, 3)`` linear velocity of the body origin,
        ``angvel (N, B, 3)``, all float32 and world frame.
    """
    angvel = cvel[..., :3]
    # rigid-body transport of the linear velocity from the tree's com to the body origin: v + w x r
    vel = cvel[..., 3:] + np.cross(angvel, xpos - root_com)
    rot = np.concatenate([xquat[..., 1:], xquat[..., :1]], axis=-1)
    return (xpos.astype(np.float32), rot.astype(np.float32), vel.astype(np.float32), angvel.astype(np.float32))


class MujocoCPUBackend(PhysicsBackend):
    """N copies of ``assets/smpl_humanoid.xml`` on the CPU; state handed over as torch tensors on ``device``.

    Args:
        num_envs: number of simulated humanoids N.
        device: device of every tensor this backend returns.
        num_threads: worker threads (default: all cores this process may use).
        xml_path: MJCF to load instead of the bundled humanoid (same bodies, joints and actuators).
        stepper: ``"batch"`` (MuJoCo >= 4.0), ``"threads"`` (any MuJoCo 3.x) or ``"auto"`` (batch when available).
        substeps: physics steps per control step.
    """

    def __init__(
        self,
        num_envs: int,
        device: Union[str, torch.device] = "cpu",
        num_threads: Optional[int] = None,
        xml_path: Optional[str] = None,
        stepper: str = "auto",
        substeps: int = skeleton.SUBSTEPS,
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        if stepper not in ("auto", "batch", "threads"):
            raise ValueError(f"stepper must be 'auto', 'batch' or 'threads', got {stepper!r}")
        if stepper == "batch" and mj_batch is None:
            raise ValueError(f"stepper 'batch' needs mujoco.batch (MuJoCo >= 4.0), found MuJoCo {mujoco.__version__}")
        self.model = load_model(xml_path)
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.substeps = substeps
        self.control_dt = float(self.model.opt.timestep) * substeps
        self.num_threads = num_threads or default_num_threads()
        use_batch = stepper == "batch" or (stepper == "auto" and mj_batch is not None)
        self.stepper_name = "batch" if use_batch else "threads"
        stepper_cls = BatchStepper if use_batch else ThreadStepper
        self._sim = stepper_cls(self.model, num_envs, self.num_threads)
        # default state = the model's rest pose, standing on the floor, at rest
        self._default_qpos = self.model.qpos0.copy()
        self._actuator_force = np.zeros((num_envs, skeleton.NUM_DOFS), np.float32)
        self._unstable = np.zeros(num_envs, bool)
        self._state: Optional[SimState] = None

    # ----------------------------------------------------------------------------------------------- state in
    def set_state(
        self,
        env_ids: Tensor,
        root_pos: Tensor,
        root_rot: Tensor,
        root_vel: Tensor,
        root_angvel: Tensor,
        dof_pos: Tensor,
        dof_vel: Tensor,
    ) -> None:
        """Overwrite the full state of envs ``env_ids``; shapes and frames as in :class:`PhysicsBackend`."""
        ids = env_ids.detach().to("cpu", torch.long).reshape(-1)
        m = ids.numel()
        check_state_shapes(m, root_pos, root_rot, root_vel, root_angvel, dof_pos, dof_vel)
        if m == 0:
            return
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= self.num_envs:
            raise ValueError(f"set_state: env_ids must lie in [0, {self.num_envs}), got {lo}..{hi}")
        if torch.unique(ids).numel() != m:
            raise ValueError("set_state: env_ids contains duplicates")

        def f64(x: Tensor) -> Tensor:
            return x.detach().to("cpu", torch.float64)

        rot = quat_normalize(f64(root_rot))
        qpos = torch.cat([f64(root_pos), rot[:, 3:4], rot[:, :3], f64(dof_pos)], dim=1)
        # MuJoCo's free joint wants the angular velocity in the pelvis frame
        qvel = torch.cat([f64(root_vel), quat_rotate_inverse(rot, f64(root_angvel)), f64(dof_vel)], dim=1)
        ids_np = ids.numpy()
        order = np.argsort(ids_np)  # the batch wants sorted ids
        self._sim.set(ids_np[order], qpos.numpy()[order], qvel.numpy()[order])
        self._actuator_force[ids_np] = 0.0  # no actuator has pushed in the new state yet
        self._state = None

    def set_state_where(self, mask: Tensor, state: SimState) -> None:
        """Put the envs where ``mask (N,)`` is set on the matching rows of ``state`` (N rows); the others keep theirs.

        MuJoCo C needs the env indices on the host: the mask is read there, as every state crossing this backend is.
        """
        ids = torch.from_numpy(np.flatnonzero(mask.detach().to("cpu", torch.bool).numpy()))
        self.set_state_from(ids, state.rows(ids.to(state.body_pos.device)))

    def host_indices(self, mask: Tensor) -> Optional[Tensor]:
        """``mask``'s envs as indices when this backend's tensors live on the CPU (reading the mask costs nothing
        there; MuJoCo reads its state there every step anyway); None for tensors on an accelerator, whose callers
        keep fixed shapes."""
        if self.device.type != "cpu":
            return None
        return torch.from_numpy(np.flatnonzero(mask.detach().numpy()))

    # ------------------------------------------------------------------------------------------------ stepping
    def step(self, pd_targets: Tensor) -> None:
        """Hold PD targets ``(N, 69)`` (radians) for :attr:`substeps` physics steps, then check stability."""
        expected = (self.num_envs, skeleton.NUM_DOFS)
        if tuple(pd_targets.shape) != expected:
            raise ValueError(f"step: pd_targets must have shape {expected}, got {tuple(pd_targets.shape)}")
        ctrl = pd_targets.detach().to("cpu", torch.float64).numpy()
        failed = self._sim.step(ctrl, self.substeps)
        np.copyto(self._actuator_force, self._sim.actuator_force[:, : skeleton.NUM_DOFS], casting="same_kind")
        self._state = None
        self._check_stability(failed)

    def _check_stability(self, failed: np.ndarray) -> None:
        """Flag non-finite, exploded or MuJoCo-reset envs and restore them to the default standing state."""
        qpos, qvel = self._sim.qpos, self._sim.qvel
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(qpos).all(axis=1) | ~np.isfinite(qvel).all(axis=1)
            bad |= (np.abs(qvel) > MAX_QVEL).any(axis=1)
            bad |= np.einsum("ij,ij->i", qpos[:, :3], qpos[:, :3]) > MAX_ROOT_DIST**2
        # MuJoCo's auto-reset leaves a finite standing env behind; its warning counters tell. The reset itself
        # zeroes them before counting one, so they are cleared here to catch the next event.
        bad |= self._sim.bad_warnings()
        bad[failed] = True
        self._unstable = bad
        if bad.any():
            ids = np.flatnonzero(bad)
            self._sim.clear_warnings(ids)
            qpos0 = np.broadcast_to(self._default_qpos, (ids.size, self.model.nq))
            self._sim.set(ids, qpos0, np.zeros((ids.size, self.model.nv)))
            self._actuator_force[ids] = 0.0

    # ---------------------------------------------------------------------------------------------- state out
    def state(self) -> SimState:
        """Current state of all envs, computed once per step and cached: treat the tensors as read-only."""
        if self._state is None:
            sim = self._sim
            pos, rot, vel, angvel = body_state_from_mujoco(
                sim.xpos[:, 1:], sim.xquat[:, 1:], sim.cvel[:, 1:], sim.subtree_com[:, 1:2]
            )
            dof_pos = sim.qpos[:, 7:].astype(np.float32)
            dof_vel = sim.qvel[:, 6:].astype(np.float32)
            tensors = [torch.from_numpy(x).to(self.device) for x in (pos, rot, vel, angvel, dof_pos, dof_vel)]
            self._state = SimState(*tensors)
        return self._state

    def actuator_forces(self) -> Tensor:
        """PD torques ``(N, 69)`` of the last physics step, N·m (zero for envs set since)."""
        return torch.from_numpy(self._actuator_force.copy()).to(self.device)

    def unstable(self) -> Tensor:
        """``(N,)`` bool: envs flagged by the last :meth:`step` (already restored to the default state)."""
        return torch.from_numpy(self._unstable.copy()).to(self.device)

    # ------------------------------------------------------------------------------------------ checkpoints
    def get_physics_state(self) -> Dict[str, Tensor]:
        """qpos/qvel/warm start/ctrl of every env plus the last torques (float64 CPU tensors)."""
        sim = self._sim
        return {
            "qpos": torch.from_numpy(sim.qpos.copy()),
            "qvel": torch.from_numpy(sim.qvel.copy()),
            "qacc_warmstart": torch.from_numpy(sim.get_warmstart()),
            "ctrl": torch.from_numpy(sim.ctrl.copy()),
            "actuator_force": torch.from_numpy(self._actuator_force.astype(np.float64)),
        }

    def set_physics_state(self, state: Dict[str, Tensor]) -> None:
        """Restore :meth:`get_physics_state` output; the next step continues bit for bit."""
        qpos = state["qpos"].to(torch.float64).numpy()
        if qpos.shape != (self.num_envs, self.model.nq):
            raise ValueError(f"set_physics_state: qpos has shape {qpos.shape}, this backend has "
                             f"({self.num_envs}, {self.model.nq})")
        ids = np.arange(self.num_envs)
        self._sim.set(ids, qpos, state["qvel"].to(torch.float64).numpy())
        self._sim.set_warmstart(state["qacc_warmstart"].to(torch.float64).numpy())
        self._sim.ctrl[:] = state["ctrl"].to(torch.float64).numpy()
        self._actuator_force[:] = state["actuator_force"].numpy()
        self._state = None

    def close(self) -> None:
        """Stop worker threads and free the simulations."""
        if self._sim is not None:
            self._sim.close()
            self._sim = None
