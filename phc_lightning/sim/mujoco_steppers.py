"""The two ways :class:`~phc_lightning.sim.mujoco_cpu.MujocoCPUBackend` advances N MuJoCo simulations.

Both keep live ``(N, ...)`` float64 arrays of the fields the backend reads (qpos, qvel, ctrl, xpos, xquat, cvel,
subtree_com, actuator_force) and end every control step with the position and velocity stages computed at the
new state, so those fields describe the current state. They give bit-identical results.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import List, Tuple

import mujoco
import numpy as np

try:  # MuJoCo >= 4.0 only
    from mujoco import batch as mj_batch
except ImportError:  # pragma: no cover - depends on the installed MuJoCo
    mj_batch = None

# MuJoCo's own instability warnings: it resets the MjData to qpos0 and counts one of these.
_BAD_WARNINGS = [
    int(mujoco.mjtWarning.mjWARN_BADQPOS),
    int(mujoco.mjtWarning.mjWARN_BADQVEL),
    int(mujoco.mjtWarning.mjWARN_BADQACC),
]
_STAGE_VEL = int(mujoco.mjtStage.mjSTAGE_VEL)


class BatchStepper:
    """N persistent simulations in one :class:`mujoco.batch.Batch`; fields are live ``(N, ...)`` float64 arrays."""

    def __init__(self, model: mujoco.MjModel, num_envs: int, num_threads: int) -> None:
        self.batch = mj_batch.Batch(model, num_envs, num_threads, persistent=True)
        self.batch.reset(stage=_STAGE_VEL)
        b = self.batch
        self.qpos, self.qvel, self.ctrl, self._warmstart = b.qpos, b.qvel, b.ctrl, b.qacc_warmstart
        self.xpos, self.xquat, self.cvel, self.subtree_com = b.xpos, b.xquat, b.cvel, b.subtree_com
        self.actuator_force = b.actuator_force

    def set(self, env_ids: np.ndarray, qpos: np.ndarray, qvel: np.ndarray) -> None:
        """Overwrite the state of sorted unique ``env_ids`` and compute the position/velocity stages."""
        self.qpos[env_ids] = qpos
        self.qvel[env_ids] = qvel
        self._warmstart[env_ids] = 0.0  # a new state: the old solver warm start means nothing
        self.batch.forward(env_ids, stage=_STAGE_VEL)

    def step(self, ctrl: np.ndarray, substeps: int) -> np.ndarray:
        """Hold ``ctrl (N, nu)`` for ``substeps`` steps; returns the ids of envs where MuJoCo raised."""
        self.ctrl[:] = ctrl
        try:
            self.batch.step(None, substeps, _STAGE_VEL)
        except mj_batch.SimulationError as err:  # those envs kept their old state; the others ran
            return np.asarray(err.ids)
        return np.zeros(0, np.int64)

    def get_warmstart(self) -> np.ndarray:
        return self._warmstart.copy()

    def set_warmstart(self, warmstart: np.ndarray) -> None:
        self._warmstart[:] = warmstart

    def bad_warnings(self) -> np.ndarray:
        """``(N,)`` bool: MuJoCo found a bad qpos/qvel/qacc (and reset that env to qpos0) since the last clear."""
        return self.batch.warning[:, _BAD_WARNINGS, 1].any(axis=1)

    def clear_warnings(self, env_ids: np.ndarray) -> None:
        self.batch.warning[env_ids] = 0

    def close(self) -> None:
        self.batch = None


class ThreadStepper:
    """One ``MjData`` per env stepped in chunks on a thread pool; mirrors the fields of :class:`BatchStepper`."""

    def __init__(self, model: mujoco.MjModel, num_envs: int, num_threads: int) -> None:
        self.model = model
        self.datas: List[mujoco.MjData] = [mujoco.MjData(model) for _ in range(num_envs)]
        n, nb = num_envs, model.nbody
        self.qpos, self.qvel = np.zeros((n, model.nq)), np.zeros((n, model.nv))
        self.ctrl = np.zeros((n, model.nu))
        self.xpos, self.xquat = np.zeros((n, nb, 3)), np.zeros((n, nb, 4))
        self.cvel, self.subtree_com = np.zeros((n, nb, 6)), np.zeros((n, nb, 3))
        self.actuator_force = np.zeros((n, model.nu))
        self._warnings = np.zeros(n, np.int64)
        self._failed = np.zeros(n, bool)
        # a few chunks per thread so that envs with many contacts do not leave a thread idle
        bounds = np.linspace(0, n, min(n, 4 * num_threads) + 1).astype(int)
        self._chunks = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
        self._pool = ThreadPoolExecutor(max_workers=num_threads) if num_threads > 1 else None
        self._substeps = 1
        for i, d in enumerate(self.datas):
            mujoco.mj_step1(model, d)
            self._gather(i, d)

    def _gather(self, i: int, d: mujoco.MjData) -> None:
        self.qpos[i], self.qvel[i] = d.qpos, d.qvel
        self.xpos[i], self.xquat[i], self.cvel[i] = d.xpos, d.xquat, d.cvel
        self.subtree_com[i], self.actuator_force[i] = d.subtree_com, d.actuator_force
        w = d.warning
        self._warnings[i] = sum(w[k].number for k in _BAD_WARNINGS)

    def _run_chunk(self, bounds: Tuple[int, int]) -> None:
        m, substeps = self.model, self._substeps
        for i in range(*bounds):
            d = self.datas[i]
            d.ctrl[:] = self.ctrl[i]
            try:
                for _ in range(substeps):
                    # the stages of step1 were computed at the end of the previous call (or by set)
                    mujoco.mj_step2(m, d)
                    mujoco.mj_step1(m, d)
            except mujoco.FatalError:
                self._failed[i] = True
            self._gather(i, d)

    def set(self, env_ids: np.ndarray, qpos: np.ndarray, qvel: np.ndarray) -> None:
        for k, i in enumerate(env_ids.tolist()):
            d = self.datas[i]
            d.qpos[:], d.qvel[:] = qpos[k], qvel[k]
            d.qacc_warmstart[:] = 0.0
            mujoco.mj_step1(self.model, d)
            self._gather(i, d)

    def step(self, ctrl: np.ndarray, substeps: int) -> np.ndarray:
        self.ctrl[:] = ctrl
        self._substeps = substeps
        self._failed[:] = False
        if self._pool is None:
            for c in self._chunks:
                self._run_chunk(c)
        else:
            list(self._pool.map(self._run_chunk, self._chunks))
        return np.flatnonzero(self._failed)

    def get_warmstart(self) -> np.ndarray:
        return np.stack([d.qacc_warmstart.copy() for d in self.datas])

    def set_warmstart(self, warmstart: np.ndarray) -> None:
        for d, w in zip(self.datas, warmstart):
            d.qacc_warmstart[:] = w

    def bad_warnings(self) -> np.ndarray:
        return self._warnings > 0

    def clear_warnings(self, env_ids: np.ndarray) -> None:
        for i in env_ids.tolist():
            for k in _BAD_WARNINGS:
                self.datas[i].warning[k].number = 0
            self._warnings[i] = 0

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
