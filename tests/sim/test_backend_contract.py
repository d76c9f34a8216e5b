"""The contract every installed physics backend fulfils, checked against the CPU MuJoCo backend as the reference.

Each test runs once per backend: ``mujoco`` always, ``mujoco_warp`` when MuJoCo Warp is installed (on CUDA when
present, else on Warp's CPU device). Same initial state + same PD targets must give the same trajectory as the
CPU backend within :data:`TOLERANCES`. The CPU backend integrates in float64 and Warp in float32; over 0.5 s the
differences measured on Warp's CPU device were ~1e-6 m / rad and ~4e-5 m/s / rad/s, and 2.4e-3 N·m for the
torques, so the tolerances leave a margin of 25-100x for the GPU's different rounding and summation order.

Warp compiles its kernels once per machine (about 35 s on 2 cores; cached in ``WARP_CACHE_PATH``, by default
``~/.cache/warp``). All Warp tests use :data:`NUM_ENVS` worlds and the default buffer sizes, so they share kernels.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from typing import Dict, Iterator

import pytest
import torch

from phc_lightning.core import skeleton
from phc_lightning.motion import BUNDLED_MOTIONS
from phc_lightning.motion.library import MotionLibrary
from phc_lightning.sim.base import PhysicsBackend, SimState
from phc_lightning.sim.factory import make_backend

HAS_WARP = importlib.util.find_spec("mujoco_warp") is not None
BACKENDS = [
    "mujoco",
    pytest.param("mujoco_warp", marks=pytest.mark.skipif(not HAS_WARP, reason="needs phc-lightning[warp]")),
]
NUM_ENVS = 3
FIELDS = ("body_pos", "body_rot", "body_vel", "body_angvel", "dof_pos", "dof_vel")
# Largest allowed |backend - CPU backend| per quantity over a trajectory (m, quaternion components, m/s, rad, rad/s).
TOLERANCES: Dict[str, float] = {
    "body_pos": 1e-4,
    "body_rot": 1e-4,
    "body_vel": 1e-3,
    "body_angvel": 1e-3,
    "dof_pos": 1e-4,
    "dof_vel": 1e-3,
    "actuator_forces": 0.05,  # N·m, of PD torques up to ~1000 N·m
}
HALF_SECOND = round(0.5 / skeleton.CONTROL_DT)  # control steps


@pytest.fixture(scope="module")
def motions() -> MotionLibrary:
    return MotionLibrary(BUNDLED_MOTIONS)


def build(name: str, num_envs: int = NUM_ENVS) -> PhysicsBackend:
    """A backend on its default device (CUDA for Warp when present); one thread for the CPU reference."""
    return make_backend(name, num_envs, num_threads=1) if name == "mujoco" else make_backend(name, num_envs)


@pytest.fixture(params=BACKENDS)
def pair(request) -> Iterator[tuple]:
    """``(backend under test, CPU reference)``, closed afterwards."""
    backend, reference = build(request.param), build("mujoco")
    yield backend, reference
    backend.close()
    reference.close()


def cpu_state(backend: PhysicsBackend) -> SimState:
    """The backend's state as float64 CPU tensors."""
    s = backend.state()
    return SimState(**{f: getattr(s, f).detach().to("cpu", torch.float64) for f in FIELDS})


def differences(a: SimState, b: SimState) -> Dict[str, float]:
    """Largest absolute difference per field; quaternions compared up to sign."""
    out = {}
    for f in FIELDS:
        x, y = getattr(a, f), getattr(b, f)
        d = (x - y).abs()
        if f == "body_rot":
            d = torch.minimum(d, (x + y).abs())
        out[f] = float(d.max())
    return out


def assert_same(a: torch.Tensor, b: torch.Tensor, device: torch.device, what: str) -> None:
    """Bit-identical on a CPU device. On a GPU, Warp gathers contacts with atomics, so the order of a world's
    constraint rows (and float32 sums over them) may differ between runs: equal to 1e-4 there."""
    if device.type == "cpu":
        assert torch.equal(a, b), what
    else:
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0, msg=what)


def run_against_reference(backend: PhysicsBackend, reference: PhysicsBackend, targets) -> Dict[str, float]:
    """Step both backends with ``targets(k)`` for each step k; return the worst difference per quantity."""
    worst = dict.fromkeys(list(FIELDS) + ["actuator_forces"], 0.0)
    for k in range(HALF_SECOND):
        pd = targets(k)
        backend.step(pd.to(backend.device))
        reference.step(pd)
        assert not backend.unstable().any() and not reference.unstable().any()
        for f, d in differences(cpu_state(backend), cpu_state(reference)).items():
            worst[f] = max(worst[f], d)
        forces = (backend.actuator_forces().cpu().double() - reference.actuator_forces().double()).abs().max()
        worst["actuator_forces"] = max(worst["actuator_forces"], float(forces))
    return worst


def assert_within_tolerances(worst: Dict[str, float]) -> None:
    over = {f: d for f, d in worst.items() if d > TOLERANCES[f]}
    assert not over, f"differences from the CPU backend over tolerance: {over} (tolerances {TOLERANCES})"


def random_state(n: int, seed: int, height: float = 1.0) -> Dict[str, torch.Tensor]:
    """A random airborne state of ``n`` humanoids (float32)."""
    gen = torch.Generator().manual_seed(seed)
    return {
        "root_pos": torch.cat([torch.randn(n, 2, generator=gen), torch.full((n, 1), height)], dim=1),
        "root_rot": torch.nn.functional.normalize(torch.randn(n, 4, generator=gen), dim=1),
        "root_vel": torch.randn(n, 3, generator=gen),
        "root_angvel": torch.randn(n, 3, generator=gen),
        "dof_pos": 0.5 * torch.randn(n, skeleton.NUM_DOFS, generator=gen),
        "dof_vel": torch.randn(n, skeleton.NUM_DOFS, generator=gen),
    }


def on(device: torch.device, state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in state.items()}


def test_standing_half_second_matches_cpu_backend(pair):
    backend, reference = pair
    # env 0: the model's rest pose (soles exactly on the floor), holding it. Envs 1, 2: the same pose turned about
    # z and dropped from 2 mm: a pose set exactly on the floor would not do, as float32 rounding of its height
    # decides whether the soles touch in the first step, and that decides the first 0.4 mm.
    rest = reference.state()
    yaw = torch.tensor([0.3, -1.2])
    standing = {
        "root_pos": rest.body_pos[[0, 0], 0] + torch.tensor([0.5, -0.2, 0.002]),
        "root_rot": torch.stack([torch.zeros(2), torch.zeros(2), torch.sin(yaw / 2), torch.cos(yaw / 2)], dim=1),
        "root_vel": torch.zeros(2, 3), "root_angvel": torch.zeros(2, 3),
        "dof_pos": torch.zeros(2, skeleton.NUM_DOFS), "dof_vel": torch.zeros(2, skeleton.NUM_DOFS),
    }  # fmt: skip
    ids = torch.tensor([1, 2])
    backend.set_state(ids.to(backend.device), **on(backend.device, standing))
    reference.set_state(ids, **standing)
    worst = run_against_reference(backend, reference, lambda k: torch.zeros(NUM_ENVS, skeleton.NUM_DOFS))
    assert_within_tolerances(worst)
    # and they did stand: the pelvis stays at its height
    height = cpu_state(backend).body_pos[:, 0, 2] - float(rest.body_pos[0, 0, 2])
    assert height.abs().max() < 0.05


@pytest.mark.parametrize("motion", ["stand", "walk"])
def test_tracking_a_reference_half_second_matches_cpu_backend(pair, motions, motion):
    backend, reference = pair
    ids = torch.full((NUM_ENVS,), motions.keys.index(motion))
    start = torch.tensor([0.0, 1.0, 2.3])  # three phases of the motion
    first = motions.get_state(ids, start)
    for b in (backend, reference):
        b.set_state_from(torch.arange(NUM_ENVS).to(b.device), SimState(**{f: getattr(first, f).to(b.device)
                                                                          for f in FIELDS}))
    dt = reference.control_dt

    def targets(k: int) -> torch.Tensor:  # PD targets = the reference's next hinge angles
        return motions.get_state(ids, start + (k + 1) * dt).dof_pos

    assert_within_tolerances(run_against_reference(backend, reference, targets))


def test_set_state_then_state_round_trips(pair):
    backend, reference = pair
    st = random_state(2, seed=1)
    ids = torch.tensor([2, 0])  # unsorted on purpose
    backend.set_state(ids.to(backend.device), **on(backend.device, st))
    s = cpu_state(backend)
    torch.testing.assert_close(s.body_pos[ids, 0], st["root_pos"].double(), atol=1e-6, rtol=0)
    torch.testing.assert_close(s.body_vel[ids, 0], st["root_vel"].double(), atol=1e-5, rtol=0)
    torch.testing.assert_close(s.body_angvel[ids, 0], st["root_angvel"].double(), atol=1e-5, rtol=0)
    torch.testing.assert_close(s.dof_pos[ids], st["dof_pos"].double(), atol=1e-6, rtol=0)
    torch.testing.assert_close(s.dof_vel[ids], st["dof_vel"].double(), atol=1e-6, rtol=0)
    w = (s.body_rot[ids, 0] * st["root_rot"].double()).sum(-1).abs()
    assert torch.all(w > 1 - 1e-6)
    # every body as the CPU backend puts it for the same state
    reference.set_state(ids, **st)
    assert_within_tolerances(differences(s, cpu_state(reference)))
    assert s.body_rot.shape == (NUM_ENVS, 24, 4) and backend.state().body_pos.dtype == torch.float32
    assert backend.state().body_pos.device.type == backend.device.type
    assert torch.all(backend.actuator_forces()[ids.to(backend.device)] == 0)


def test_physics_state_round_trip_continues_the_same_trajectory(pair):
    backend, reference = pair
    backend.set_state(torch.arange(NUM_ENVS).to(backend.device), **on(backend.device, random_state(NUM_ENVS, 2)))
    gen = torch.Generator().manual_seed(3)
    pd = [0.3 * torch.randn(NUM_ENVS, skeleton.NUM_DOFS, generator=gen) for _ in range(4)]
    backend.step(pd[0].to(backend.device))
    saved = backend.get_physics_state()
    assert all(v.device.type == "cpu" and v.dtype == torch.float64 for v in saved.values())
    for p in pd[1:]:
        backend.step(p.to(backend.device))
    first = cpu_state(backend)
    backend.set_physics_state(saved)
    for p in pd[1:]:
        backend.step(p.to(backend.device))
    again = cpu_state(backend)
    for f in FIELDS:
        assert_same(getattr(first, f), getattr(again, f), backend.device, f"{f} after restoring the physics state")
    # a checkpoint from the CPU backend resumes on this one (same keys and layout)
    reference.set_state(torch.arange(NUM_ENVS), **random_state(NUM_ENVS, 4))
    reference.step(pd[0])
    backend.set_physics_state(reference.get_physics_state())
    assert_within_tolerances(differences(cpu_state(backend), cpu_state(reference)))


def test_resetting_some_envs_leaves_the_others_untouched(pair):
    backend, _ = pair
    twin = build("mujoco_warp" if type(backend).__name__ == "MujocoWarpBackend" else "mujoco")
    start = random_state(NUM_ENVS, seed=5)
    for b in (backend, twin):
        b.set_state(torch.arange(NUM_ENVS).to(b.device), **on(b.device, start))
    gen = torch.Generator().manual_seed(6)
    for k in range(4):
        pd = 0.3 * torch.randn(NUM_ENVS, skeleton.NUM_DOFS, generator=gen)
        if k == 1:  # env 1 of `backend` only starts over
            backend.set_state(torch.tensor([1], device=backend.device), **on(backend.device, random_state(1, 7)))
        for b in (backend, twin):
            b.step(pd.to(b.device))
    s, t = cpu_state(backend), cpu_state(twin)
    for f in FIELDS:
        assert_same(getattr(s, f)[[0, 2]], getattr(t, f)[[0, 2]], backend.device, f)
        assert not torch.equal(getattr(s, f)[1], getattr(t, f)[1]), f
    twin.close()


def test_a_masked_reset_sets_exactly_what_an_indexed_reset_sets(pair):
    """set_state_where (fixed shapes, what the task uses where masks are not read on the host) against set_state."""
    backend, _ = pair
    twin = build("mujoco_warp" if type(backend).__name__ == "MujocoWarpBackend" else "mujoco")
    start, new = random_state(NUM_ENVS, seed=15), random_state(NUM_ENVS, seed=16)
    for b in (backend, twin):
        b.set_state(torch.arange(NUM_ENVS).to(b.device), **on(b.device, start))
        b.step(torch.zeros(NUM_ENVS, skeleton.NUM_DOFS, device=b.device))
    mask = torch.tensor([True, False, True])
    rows = SimState(body_pos=new["root_pos"][:, None], body_rot=new["root_rot"][:, None],
                    body_vel=new["root_vel"][:, None], body_angvel=new["root_angvel"][:, None],
                    dof_pos=new["dof_pos"], dof_vel=new["dof_vel"])
    backend.set_state_where(mask.to(backend.device), SimState(**on(backend.device, rows.__dict__)))
    twin.set_state(torch.tensor([0, 2], device=twin.device), **on(twin.device, {k: v[[0, 2]] for k, v in new.items()}))
    s, t = cpu_state(backend), cpu_state(twin)
    for f in FIELDS:
        assert_same(getattr(s, f), getattr(t, f), backend.device, f)
    assert_same(backend.actuator_forces().cpu(), twin.actuator_forces().cpu(), backend.device, "actuator_forces")
    for key, value in twin.get_physics_state().items():
        assert_same(backend.get_physics_state()[key], value, backend.device, key)
    twin.close()


@pytest.mark.parametrize("bad", ["nan_dof_vel", "huge_root_vel", "root_far_away"])
def test_unstable_env_is_flagged_and_reset(pair, bad):
    backend, _ = pair
    clean = build("mujoco_warp" if type(backend).__name__ == "MujocoWarpBackend" else "mujoco")
    rest = cpu_state(clean)
    st = random_state(NUM_ENVS, seed=9)
    for b in (backend, clean):
        b.set_state(torch.arange(NUM_ENVS).to(b.device), **on(b.device, st))
    broken = {k: v[1:2].clone() for k, v in st.items()}
    if bad == "nan_dof_vel":
        broken["dof_vel"][0, 10] = math.nan
    elif bad == "huge_root_vel":
        broken["root_vel"][0, 0] = 2e4
    else:
        broken["root_pos"][0, 0] = 2e3
    backend.set_state(torch.tensor([1], device=backend.device), **on(backend.device, broken))
    pd = 0.3 * torch.randn(NUM_ENVS, skeleton.NUM_DOFS, generator=torch.Generator().manual_seed(10))
    for b in (backend, clean):
        b.step(pd.to(b.device))
    assert backend.unstable().cpu().tolist() == [False, True, False]
    assert not clean.unstable().any()
    s, ref = cpu_state(backend), cpu_state(clean)
    for f in FIELDS:
        assert torch.isfinite(getattr(s, f)).all(), f
        assert_same(getattr(s, f)[[0, 2]], getattr(ref, f)[[0, 2]], backend.device, f)
    # the flagged env stands in the rest pose, at rest, and has pushed no torque yet
    assert torch.equal(s.dof_pos[1], torch.zeros(skeleton.NUM_DOFS, dtype=torch.float64))
    torch.testing.assert_close(s.body_pos[1], rest.body_pos[1])
    assert torch.all(backend.actuator_forces()[1] == 0)
    backend.step(pd.to(backend.device))
    assert not backend.unstable().any()
    clean.close()


def test_actuator_forces_are_the_pd_torques_of_the_cpu_backend(pair):
    backend, reference = pair
    st = random_state(NUM_ENVS, seed=11, height=2.0)
    pd = torch.randn(NUM_ENVS, skeleton.NUM_DOFS, generator=torch.Generator().manual_seed(12))
    backend.set_state(torch.arange(NUM_ENVS).to(backend.device), **on(backend.device, st))
    reference.set_state(torch.arange(NUM_ENVS), **st)
    backend.step(pd.to(backend.device))
    reference.step(pd)
    forces, expected = backend.actuator_forces().cpu(), reference.actuator_forces()
    assert forces.shape == (NUM_ENVS, skeleton.NUM_DOFS) and forces.abs().max() > 10
    torch.testing.assert_close(forces, expected, atol=TOLERANCES["actuator_forces"], rtol=0)


# ---------------------------------------------------------------------------------------- Warp-specific behaviour
warp_only = pytest.mark.skipif(not HAS_WARP, reason="needs phc-lightning[warp]")


@warp_only
def test_warp_contact_buffer_overflow_is_an_error_not_dropped_contacts():
    from phc_lightning.sim.mujoco_warp import PhysicsOverflowError

    backend = make_backend("mujoco_warp", NUM_ENVS, nconmax=2)  # standing takes ~15 contacts per world
    backend.check_errors()  # nothing overflowed yet
    for _ in range(2):  # a step never reads the device: the overflow bits wait for the check
        backend.step(torch.zeros(NUM_ENVS, skeleton.NUM_DOFS, device=backend.device))
    with pytest.raises(PhysicsOverflowError, match=r"NARROWPHASE .*nconmax \(now 2\)"):
        backend.check_errors()
    backend.close()


@warp_only
def test_warp_computes_the_body_state_once_per_step_and_once_per_reset():
    """The position and velocity stages run at the end of the step's physics and after a state write, not again
    after the stability check (a world it restores reads as the rest pose without them)."""
    backend = make_backend("mujoco_warp", NUM_ENVS, graph=False)
    senses, sense = [], backend._sense
    backend._sense = lambda: senses.append(1) or sense()
    pd = torch.zeros(NUM_ENVS, skeleton.NUM_DOFS, device=backend.device)
    backend.step(pd)
    assert len(senses) == 1
    backend.set_state_where(torch.tensor([True, False, False]), backend.state())
    assert len(senses) == 2
    backend.close()


@warp_only
def test_factory_builds_warp_backend_on_its_default_device():
    from phc_lightning.sim.mujoco_warp import MujocoWarpBackend, default_device

    backend = make_backend("mujoco_warp", 1)
    assert isinstance(backend, MujocoWarpBackend) and backend.device == default_device()
    assert backend.control_dt == pytest.approx(skeleton.CONTROL_DT) and backend.substeps == skeleton.SUBSTEPS
    backend.close()


def test_missing_warp_extra_names_it_in_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "mujoco_warp", None)  # import mujoco_warp now raises ImportError
    monkeypatch.delitem(sys.modules, "phc_lightning.sim.mujoco_warp", raising=False)
    with pytest.raises(ImportError, match=r"install phc-lightning\[warp\]") as err:
        make_backend("mujoco_warp", 1)
    assert "\n" not in str(err.value)


@warp_only
def test_warp_graph_replay_equals_direct_kernel_launches():
    backends = [make_backend("mujoco_warp", NUM_ENVS, graph=g) for g in (True, False)]
    gen = torch.Generator().manual_seed(13)
    for k in range(3):
        pd = 0.3 * torch.randn(NUM_ENVS, skeleton.NUM_DOFS, generator=gen)
        if k == 1:
            for b in backends:
                b.set_state(torch.tensor([0], device=b.device), **on(b.device, random_state(1, 14)))
        for b in backends:
            b.step(pd.to(b.device))
    assert len(backends[0]._graphs) > 0 and not any(backends[1]._graphs.values())
    s, t = cpu_state(backends[0]), cpu_state(backends[1])
    for f in FIELDS:
        assert_same(getattr(s, f), getattr(t, f), backends[0].device, f)
    for b in backends:
        b.close()
