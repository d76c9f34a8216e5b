"""MuJoCo Warp backend: the same MJCF as the CPU backend, one Warp world per env, state shared with torch.

Every per-env array lives in Warp device memory and is read and written through ``wp.to_torch`` views (no copy):
on a GPU the whole step — PD targets in, physics, stability check, body state out — stays on the device. Warp's
``"cpu"`` device runs the same kernels on the host (slowly, a few worlds: that is how CI tests this backend).

Physics as in :class:`~phc_lightning.sim.mujoco_cpu.MujocoCPUBackend`: the MJCF's ``<position>`` actuators turn
``ctrl`` (the PD target, radians) into ``kp (target - q) - kv q̇`` inside MuJoCo, so a control step writes the
targets to ``ctrl`` and runs ``substeps`` ``mjw.step`` calls with the model's timestep and integrator; then the
position and velocity stages (kinematics, com, ``cvel``) are recomputed so the state read back describes the new
``qpos`` / ``qvel``, as the CPU backend's ``mj_step1`` does. Warp computes in float32, MuJoCo C in float64: the
trajectories agree to the tolerances of ``tests/sim/test_backend_contract.py``, not bit for bit.

Contacts and constraints live in fixed-size buffers (``nconmax`` contacts and ``njmax`` constraint rows per world,
sized for one humanoid on a plane with a wide margin). Warp raises no error when they overflow — it drops
contacts — but ORs a bit into its per-world overflow bitmask, which only a data reset clears. A step never reads it
(that would wait for the GPU every step): :meth:`MujocoWarpBackend.check_errors` reads it once, and the rollout calls
it once per iteration, before training on the iteration, raising :class:`PhysicsOverflowError`.

Nothing in :meth:`~MujocoWarpBackend.step`, :meth:`~MujocoWarpBackend.set_state_where` or
:meth:`~MujocoWarpBackend.state` reads a device value on the host: worlds that went unstable are restored with masked
writes, and resets of a changing set of envs take a mask of fixed shape.

The sequences of kernels of a control step, of a state readout and of a reset are captured once as Warp graphs
(CUDA graphs on a GPU; Warp replays graphs on its CPU device too) and replayed with one launch each. On CUDA, Warp
launches on its own stream, created blocking, so it is ordered with torch's default stream without host syncs.
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Callable, Dict, Optional, Union

import torch

from phc_lightning.core import skeleton
from phc_lightning.sim.base import PhysicsBackend, SimState, check_state_shapes
from phc_lightning.sim.mujoco_convert import body_state_from_derived, generalized_from_root
from phc_lightning.sim.mujoco_cpu import MAX_QVEL, MAX_ROOT_DIST, load_model

try:  # an optional dependency (Python >= 3.10): pip install 'phc-lightning[warp]'
    import mujoco_warp as mjw
    import warp as wp
except ImportError as _err:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        f"backend 'mujoco_warp' needs MuJoCo Warp ({_err}): install phc-lightning[warp]"
    ) from _err

Tensor = torch.Tensor
# Warp logs a line per kernel module it loads (hundreds per step function): keep training logs readable.
if hasattr(wp, "LOG_WARNING"):  # Warp >= 1.19
    wp.config.log_level = max(wp.config.log_level, wp.LOG_WARNING)
else:  # pragma: no cover - older Warp
    wp.config.quiet = True

# Per-world buffer sizes. One humanoid on a plane: ~15 contacts standing, 21 at most in 40 falls with random torques
# (measured with MuJoCo C); pyramidal friction cones with condim 3 take 4 constraint rows per contact.
DEFAULT_NCONMAX = 64
DEFAULT_NJMAX = 4 * DEFAULT_NCONMAX
# Overflow bits that mean dropped contacts or constraint rows. The solver's iteration limits (ITERATIONS,
# LS_ITERATIONS) are not errors: MuJoCo C stops there too.
_OVERFLOW_ERRORS = {
    "NEFC": "constraint rows > njmax",
    "NJMAX_NNZ": "constraint Jacobian non-zeros > njmax_nnz",
    "BROADPHASE": "broadphase pairs > nconmax * num_envs",
    "NARROWPHASE": "contacts > nconmax * num_envs",
    "CCD": "CCD contacts overflow",
    "EPA_HORIZON": "EPA horizon buffer overflow",
    "NVMAX": "active DoFs > nvmax",
}


class PhysicsOverflowError(RuntimeError):
    """A contact or constraint buffer overflowed: the physics of some worlds dropped contacts and is wrong."""


def default_device() -> torch.device:
    """``cuda`` when torch and Warp both see a GPU, else ``cpu`` (Warp's CPU device)."""
    if torch.cuda.is_available() and wp.is_cuda_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


class MujocoWarpBackend(PhysicsBackend):
    """N copies of ``assets/smpl_humanoid.xml`` as MuJoCo Warp worlds; tensors on ``device`` without copies.

    Args:
        num_envs: number of simulated humanoids N (Warp worlds).
        device: where the worlds and every returned tensor live: a CUDA device, or ``"cpu"`` for Warp's CPU device
            (default: CUDA when present).
        num_threads: ignored (accepted so that configs written for the CPU backend work unchanged).
        xml_path: MJCF to load instead of the bundled humanoid (same bodies, joints and actuators).
        substeps: physics steps per control step.
        nconmax: contacts allocated per world (a world may use more while the total fits).
        njmax: constraint rows allocated per world (a hard per-world limit).
        graph: replay captured Warp graphs instead of launching every kernel from Python.
    """

    def __init__(
        self,
        num_envs: int,
        device: Optional[Union[str, torch.device]] = None,
        num_threads: Optional[int] = None,
        xml_path: Optional[Union[str, Path]] = None,
        substeps: int = skeleton.SUBSTEPS,
        nconmax: int = DEFAULT_NCONMAX,
        njmax: int = DEFAULT_NJMAX,
        graph: bool = True,
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.model = load_model(xml_path)
        self.num_envs = num_envs
        self.device = default_device() if device is None else torch.device(device)
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        if self.device.type not in ("cpu", "cuda"):
            raise ValueError(f"backend 'mujoco_warp' runs on 'cpu' or 'cuda', got {self.device}")
        self.substeps = substeps
        self.control_dt = float(self.model.opt.timestep) * substeps
        self.nconmax, self.njmax = nconmax, njmax
        self.wp_device = wp.get_device(str(self.device))
        with wp.ScopedDevice(self.wp_device):
            self._m = mjw.put_model(self.model)
            self._d = mjw.make_data(self.model, nworld=num_envs, nconmax=nconmax, njmax=njmax)
        d = self._d
        # zero-copy torch views of the Warp arrays this backend reads or writes
        self._qpos, self._qvel, self._ctrl = wp.to_torch(d.qpos), wp.to_torch(d.qvel), wp.to_torch(d.ctrl)
        self._warmstart = wp.to_torch(d.qacc_warmstart)
        self._xpos, self._xquat, self._cvel = wp.to_torch(d.xpos), wp.to_torch(d.xquat), wp.to_torch(d.cvel)
        self._subtree_com = wp.to_torch(d.subtree_com)
        self._last_force = wp.to_torch(d.actuator_force)
        self._overflow = wp.to_torch(d.overflow)
        self._overflow.zero_()
        self._error_bits = 0
        for name in _OVERFLOW_ERRORS:
            self._error_bits |= int(getattr(mjw.OverflowType, name))
        self._qpos0 = torch.as_tensor(self.model.qpos0, dtype=self._qpos.dtype, device=self.device)
        self._actuator_force = torch.zeros(num_envs, skeleton.NUM_DOFS, device=self.device)
        self._unstable = torch.zeros(num_envs, dtype=torch.bool, device=self.device)
        self._state: Optional[SimState] = None
        self._graphs: Dict[str, object] = {}
        # CUDA graphs need Warp's stream-ordered allocator for what the kernels allocate while captured
        self._use_graph = graph and (self.wp_device.is_cpu or wp.is_mempool_enabled(self.wp_device))
        self._launch("sense", self._sense)  # body state of the rest pose (make_data leaves qpos0, qvel 0)
        # What a world restored to the rest pose reads as, so a restore needs no second sense pass (see state())
        self._rest_body = body_state_from_derived(self._xpos[:1, 1:], self._xquat[:1, 1:], self._cvel[:1, 1:],
                                                  self._subtree_com[:1, 1:2])
        self._restored_unsensed = False

    # ------------------------------------------------------------------------------------------ kernels
    def _sense(self) -> None:
        """Position and velocity stages needed by :meth:`state`: body poses, tree com, ``cvel``."""
        mjw.kinematics(self._m, self._d)
        mjw.com_pos(self._m, self._d)
        mjw.com_vel(self._m, self._d)

    def _physics(self) -> None:
        """``substeps`` MuJoCo steps holding ``ctrl``, then the stages :meth:`state` reads."""
        for _ in range(self.substeps):
            mjw.step(self._m, self._d)
        self._sense()

    def _launch(self, name: str, kernels: Callable[[], None]) -> None:
        """Run ``kernels`` on the backend's Warp device, through a graph captured on first use when enabled.

        The first call runs the kernels directly (compiling or loading them, which a capture must not do) and
        captures them the second time.
        """
        with wp.ScopedDevice(self.wp_device):
            graph = self._graphs.get(name)
            if graph is not None:
                wp.capture_launch(graph)
            elif self._use_graph and name + "/warm" in self._graphs:
                # no garbage collection while capturing: a Warp object freed now would be recorded into the graph
                collecting = gc.isenabled()
                gc.disable()
                try:
                    with wp.ScopedCapture() as capture:
                        kernels()
                finally:
                    if collecting:
                        gc.enable()
                self._graphs[name] = capture.graph
                wp.capture_launch(capture.graph)
            else:
                kernels()
                self._graphs[name + "/warm"] = None

    # ----------------------------------------------------------------------------------------- state in
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
        ids = env_ids.detach().to(self.device, torch.long).reshape(-1)
        m = ids.numel()
        check_state_shapes(m, root_pos, root_rot, root_vel, root_angvel, dof_pos, dof_vel)
        if m == 0:
            return
        ordered = ids.sort().values
        duplicates = (ordered[1:] == ordered[:-1]).any() if m > 1 else torch.zeros((), dtype=torch.bool,
                                                                                  device=self.device)
        lo, hi, dup = torch.stack([ordered[0], ordered[-1], duplicates.to(ordered)]).tolist()  # one host sync
        if lo < 0 or hi >= self.num_envs:
            raise ValueError(f"set_state: env_ids must lie in [0, {self.num_envs}), got {lo}..{hi}")
        if dup:
            raise ValueError("set_state: env_ids contains duplicates")

        def f64(x: Tensor) -> Tensor:
            return x.detach().to(self.device, torch.float64)

        qpos, qvel = generalized_from_root(*(f64(x) for x in (root_pos, root_rot, root_vel, root_angvel, dof_pos,
                                                               dof_vel)))
        self._qpos[ids] = qpos.to(self._qpos.dtype)
        self._qvel[ids] = qvel.to(self._qvel.dtype)
        self._warmstart[ids] = 0.0  # a new state: the old solver warm start means nothing
        self._actuator_force[ids] = 0.0  # no actuator has pushed in the new state yet
        self._sensed()

    def set_state_where(self, mask: Tensor, state: SimState) -> None:
        """Put the worlds where ``mask (N,)`` is set on the matching rows of ``state`` (N rows); the others keep
        theirs. Masked writes of fixed shape: no host read, whatever the number of worlds reset."""
        check_state_shapes(self.num_envs, state.body_pos[:, 0], state.body_rot[:, 0], state.body_vel[:, 0],
                           state.body_angvel[:, 0], state.dof_pos, state.dof_vel)
        qpos, qvel = generalized_from_root(*(x.detach().to(self.device, torch.float64) for x in (
            state.body_pos[:, 0], state.body_rot[:, 0], state.body_vel[:, 0], state.body_angvel[:, 0], state.dof_pos,
            state.dof_vel)))
        rows = mask.detach().to(self.device, torch.bool).unsqueeze(-1)
        self._qpos.copy_(torch.where(rows, qpos.to(self._qpos.dtype), self._qpos))
        self._qvel.copy_(torch.where(rows, qvel.to(self._qvel.dtype), self._qvel))
        self._warmstart.masked_fill_(rows, 0.0)
        self._actuator_force.masked_fill_(rows, 0.0)
        self._sensed()

    def _sensed(self) -> None:
        """Recompute the body state of every world after a write of ``qpos`` / ``qvel``."""
        self._launch("sense", self._sense)
        self._restored_unsensed = False
        self._state = None

    # ----------------------------------------------------------------------------------------- stepping
    def step(self, pd_targets: Tensor) -> None:
        """Hold PD targets ``(N, 69)`` (radians) for :attr:`substeps` physics steps, then check stability.

        Raises:
            PhysicsOverflowError: a contact or constraint buffer overflowed during the step.
        """
        expected = (self.num_envs, skeleton.NUM_DOFS)
        if tuple(pd_targets.shape) != expected:
            raise ValueError(f"step: pd_targets must have shape {expected}, got {tuple(pd_targets.shape)}")
        self._ctrl.copy_(pd_targets.detach())
        self._launch("physics", self._physics)
        self._actuator_force.copy_(self._last_force)
        self._state = None
        self._check_stability()

    def check_errors(self) -> None:
        """Raise :class:`PhysicsOverflowError` when any world's overflow bitmask has an error bit, set by any step
        since the backend was built (one host read: call it once per rollout, not per step)."""
        flags = self._overflow & self._error_bits
        if not bool(flags.any()):
            return
        worlds = flags.nonzero().flatten()
        bits = 0
        for value in flags.unique().tolist():
            bits |= int(value)
        what = [f"{name} ({why})" for name, why in _OVERFLOW_ERRORS.items() if bits & getattr(mjw.OverflowType, name)]
        raise PhysicsOverflowError(
            f"MuJoCo Warp buffers overflowed in {worlds.numel()} of {self.num_envs} worlds (first: "
            f"{worlds[:5].tolist()}): {', '.join(what)}; their contacts were dropped. Build the backend with a larger "
            f"nconmax (now {self.nconmax}) / njmax (now {self.njmax})."
        )

    def _check_stability(self) -> None:
        """Flag non-finite or exploded worlds and put them back in the rest pose, without a host sync.

        The body state of the restored worlds is the rest pose's, which :meth:`state` puts in their rows, instead
        of a second sense pass over every world right after the step's own."""
        qpos, qvel = self._qpos, self._qvel
        bad = ~torch.isfinite(qpos).all(dim=1) | ~torch.isfinite(qvel).all(dim=1)
        bad |= (qvel.abs() > MAX_QVEL).any(dim=1)
        bad |= (qpos[:, :3].double().square().sum(dim=1) > MAX_ROOT_DIST**2)
        self._unstable = bad
        rows = bad[:, None]
        # masked writes rather than `if bad.any()`: no device-to-host round trip on a GPU
        qpos.copy_(torch.where(rows, self._qpos0, qpos))
        for buf in (qvel, self._warmstart, self._actuator_force):
            buf.masked_fill_(rows, 0.0)
        self._restored_unsensed = True

    # ---------------------------------------------------------------------------------------- state out
    def state(self) -> SimState:
        """Current state of all envs, computed once per step and cached: treat the tensors as read-only."""
        if self._state is None:
            body = body_state_from_derived(
                self._xpos[:, 1:], self._xquat[:, 1:], self._cvel[:, 1:], self._subtree_com[:, 1:2]
            )
            if self._restored_unsensed:  # worlds restored since the last sense stand in the rest pose
                rows = self._unstable[:, None, None]
                body = tuple(torch.where(rows, rest, x) for rest, x in zip(self._rest_body, body))
            self._state = SimState(*body, self._qpos[:, 7:].clone(), self._qvel[:, 6:].clone())
        return self._state

    def actuator_forces(self) -> Tensor:
        """PD torques ``(N, 69)`` of the last physics step, N·m (zero for envs set or reset since)."""
        return self._actuator_force.clone()

    def unstable(self) -> Tensor:
        """``(N,)`` bool: envs flagged by the last :meth:`step` (already restored to the default state)."""
        return self._unstable.clone()

    # ------------------------------------------------------------------------------------- checkpoints
    def get_physics_state(self) -> Dict[str, Tensor]:
        """qpos/qvel/warm start/ctrl of every env plus the last torques, float64 CPU tensors with the CPU backend's
        keys, so a checkpoint resumes on either backend."""

        def out(x: Tensor) -> Tensor:
            return x.detach().to("cpu", torch.float64).clone()

        return {
            "qpos": out(self._qpos),
            "qvel": out(self._qvel),
            "qacc_warmstart": out(self._warmstart),
            "ctrl": out(self._ctrl),
            "actuator_force": out(self._actuator_force),
        }

    def set_physics_state(self, state: Dict[str, Tensor]) -> None:
        """Restore :meth:`get_physics_state` output (from either backend); the next step continues from it."""
        shape = tuple(state["qpos"].shape)
        if shape != tuple(self._qpos.shape):
            raise ValueError(f"set_physics_state: qpos has shape {shape}, this backend has {tuple(self._qpos.shape)}")
        for key, dst in (("qpos", self._qpos), ("qvel", self._qvel), ("qacc_warmstart", self._warmstart),
                         ("ctrl", self._ctrl), ("actuator_force", self._actuator_force)):
            dst.copy_(state[key].to(self.device, dst.dtype))
        self._sensed()

    def close(self) -> None:
        """Drop the graphs and the Warp arrays."""
        self._graphs.clear()
        self._state = None

