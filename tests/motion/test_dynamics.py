"""Dynamic plausibility of motions on this humanoid (``phc_lightning.motion.dynamics``, ``validate --dynamics``).

``mujoco.mj_inverse`` gives the force and moment the floor must apply to the pelvis' free joint for the
reference's accelerations; the feet can give it only if it pushes, stays in the friction cone, and has its centre
of pressure inside the support polygon. The bundled clips must be followable; a lean no foot can hold, and the
real CMU clip's standing kick, must be reported.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict

import mujoco
import numpy as np
import pytest
import torch

from phc_lightning.cli import main
from phc_lightning.core.rotations import quat_from_axis_angle, quat_mul
from phc_lightning.motion import BUNDLED_MOTIONS
from phc_lightning.motion.amass import place_on_floor
from phc_lightning.motion.dynamics import (
    ContactRule,
    GroundNeeds,
    dynamics_findings,
    ground_needs,
    hull_distance,
    infeasible_frames,
    median3,
    support_corners,
)
from phc_lightning.motion.formats import load_motion_file, save_motions_npz
from phc_lightning.motion.library import MotionLibrary
from phc_lightning.motion.raw_motion import RawMotion
from phc_lightning.sim.mujoco_cpu import load_model
from tests.helpers import CMU_PKL as CMU
from tests.helpers import SHARED_DATA

WALKS = SHARED_DATA / "accad_walk_train.npz"
HARD = SHARED_DATA / "accad_hard.npz"


@pytest.fixture(scope="module")
def model() -> mujoco.MjModel:
    return load_model()


@pytest.fixture(scope="module")
def strict(model: mujoco.MjModel) -> Dict[str, GroundNeeds]:
    """The bundled clips at frame precision: raw differences, only corners within 5 mm of the floor bear weight."""
    lib = MotionLibrary(BUNDLED_MOTIONS, velocity_smoothing=0.0)
    return {key: ground_needs(lib, mid, model, ContactRule(band=0.005)) for mid, key in enumerate(lib.keys)}


def _lean(stand: RawMotion, angle: float) -> RawMotion:
    """``stand`` with the whole body tilted forward by ``angle`` about its pelvis, then put back on the floor."""
    tilt = quat_from_axis_angle(torch.tensor([0.0, 1.0, 0.0]), torch.tensor(angle))
    rot = quat_mul(tilt.expand(stand.num_frames, 24, 4), torch.from_numpy(stand.global_rot))
    return place_on_floor(RawMotion("lean", stand.fps, stand.root_pos.copy(), rot.numpy().astype(np.float32)))


def _foot(x: float, z: float, y: float = 0.0) -> np.ndarray:
    """The 8 corners of a 20 x 10 x 5 cm foot box with its heel at ``x`` and its sole at height ``z``."""
    return np.array([[x + dx, y + dy, z + dz] for dx in (0.0, 0.2) for dy in (-0.05, 0.05) for dz in (0.0, 0.05)])


def _lifted(stand: RawMotion, key: str, dz: np.ndarray) -> RawMotion:
    """``stand`` with its whole body raised by ``dz [T]`` metres (the library puts its lowest sole at z = 0)."""
    root = stand.root_pos.copy()
    root[:, 2] += dz.astype(root.dtype)
    return RawMotion(key, stand.fps, root, stand.global_rot.copy())


def test_hull_distance_is_signed() -> None:
    square = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.5, 0.5]])
    assert hull_distance(square, np.array([0.5, 0.25])) == pytest.approx(-0.25)
    assert hull_distance(square, np.array([1.5, 0.5])) == pytest.approx(0.5)
    assert hull_distance(square, np.array([2.0, 2.0])) == pytest.approx(2**0.5)  # off a vertex: Euclidean


def test_hull_distance_of_one_or_two_corners_or_collinear_ones() -> None:
    """A heel line or one corner down has no inside: a CoP on it is at 0, beside it at its perpendicular
    distance (the nearest corner's distance said 0.5 m for a CoP halfway along a 1 m segment)."""
    segment = np.array([[0.0, 0.0], [1.0, 0.0]])
    assert hull_distance(segment, np.array([0.5, 0.0])) == 0.0
    assert hull_distance(segment, np.array([0.5, 0.3])) == pytest.approx(0.3)
    assert hull_distance(segment, np.array([1.4, 0.3])) == pytest.approx(0.5)  # beyond an end: to that end
    collinear = np.array([[0.0, 0.0], [2.0, 2.0], [0.5, 0.5], [1.0, 1.0]])
    assert hull_distance(collinear, np.array([1.5, 1.5])) == 0.0
    assert hull_distance(collinear, np.array([1.0, 0.0])) == pytest.approx(0.5**0.5)
    assert hull_distance(np.array([[1.0, 1.0], [1.0, 1.0]]), np.array([1.0, 1.5])) == pytest.approx(0.5)


def test_a_stance_foot_floating_4_cm_bears_weight_a_swinging_one_does_not() -> None:
    """Real mocap on the mean-shape skeleton floats its stance feet 2-8 cm; the swinging foot passes as low."""
    t = np.arange(30)
    stance = np.stack([_foot(0.0, 0.04, y=0.1) for _ in t])  # still, its sole 4 cm up
    swing = np.stack([_foot(-0.3 + 2.0 * i / 30, 0.09 * np.sin(np.pi * i / 29), y=-0.1) for i in t])  # 2 m/s
    support = support_corners(np.concatenate([stance, swing], 1), 30.0)
    assert support[:, :8].any(1).all()  # the stance foot, 4 cm above the local floor the swing foot touches
    assert not support[:, 8:].any()


def test_both_feet_15_cm_up_in_a_hop_is_a_flight_and_a_hover_too() -> None:
    """A hop in place: feet on the floor, 0.35 s ballistic up to 15 cm (slow at the top), on the floor again."""
    t = (np.arange(11) + 0.5) / 30.0
    lift = np.r_[np.zeros(20), 1.716 * t - 0.5 * 9.81 * t**2, np.zeros(20)]
    feet = np.stack([np.concatenate([_foot(0.0, z, y=0.1), _foot(0.0, z, y=-0.1)]) for z in lift])
    flight = ~support_corners(feet, 30.0).any(1)
    assert lift.max() > 0.14 and flight[lift > 0.1].all() and not flight[lift < 0.05].any()
    # held 15 cm up for 3 s: the local floor follows it, the highest a corner may bear weight does not
    held = np.r_[np.zeros(15), np.full(90, 0.15)]
    feet = np.stack([np.concatenate([_foot(0.0, z, y=0.1), _foot(0.0, z, y=-0.1)]) for z in held])
    assert (~support_corners(feet, 30.0).any(1))[15:].all()


def test_a_smoothed_take_off_is_no_shortfall_in_flight_a_hover_is(model: mujoco.MjModel) -> None:
    """The velocity smoothing (sigma 2 frames) spreads the take-off and landing pushes of a hop several frames into
    its flight; a ballistic flight needs no force of its own. A body held off the floor needs its weight."""
    stand = next(m for m in load_motion_file(BUNDLED_MOTIONS) if m.key == "stand")
    t = np.clip(np.arange(stand.num_frames) - 50, 0, None) / stand.fps
    hop = np.clip(1.98 * t - 0.5 * 9.81 * t**2, 0.0, None)  # 20 cm, 0.4 s in the air
    hover = np.where((np.arange(stand.num_frames) >= 40) & (np.arange(stand.num_frames) < 80), 0.2, 0.0)
    lib = MotionLibrary([_lifted(stand, "hop", hop), _lifted(stand, "hover", hover)])
    hopped, held = ground_needs(lib, 0, model), ground_needs(lib, 1, model)
    assert not infeasible_frames(hopped).any(), np.flatnonzero(infeasible_frames(hopped))
    assert hopped.flight.sum() >= 6  # the feet were clearly off the floor
    assert infeasible_frames(held)[45:75].all()
    assert held.shortfall[60] == pytest.approx(1.0, abs=0.05)  # the whole weight, nothing pushes


def test_every_bundled_clip_is_followable_as_the_env_plays_it(model: mujoco.MjModel) -> None:
    """What ``phc motions validate --dynamics`` checks: no frame of any bundled clip needs forces the feet lack."""
    lib = MotionLibrary(BUNDLED_MOTIONS)
    assert dynamics_findings(lib, model) == []


def test_every_clip_starts_with_ground_forces_the_feet_can_give(strict: Dict[str, GroundNeeds]) -> None:
    """The evaluation starts every clip at frame 0, standing, so the first second must be followable frame by
    frame: the ground pushes (never pulls), inside the friction cone, from under the feet. jog used to start moving
    at once and lift its first foot at 0.25 s, asking the ground to pull the body down for 4 frames and then to push
    from 20-30 cm behind the heels; the policies learned every part of jog except that start."""
    for key, needs in strict.items():
        second = slice(1, 31)
        # 3 cm: walk's first heel strike (frame 29) needs its CoP 2.7 cm beyond the toes of the trailing foot.
        cop_off = median3(np.nan_to_num(needs.cop_outside[second], nan=0.0)) > 0.03
        force_off = median3(needs.shortfall[second]) > 0.05
        assert not (cop_off | force_off).any(), f"{key}: frames {np.flatnonzero(cop_off | force_off) + 1}"


def test_validate_dynamics_reports_a_lean_no_foot_can_hold(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    stand = next(m for m in load_motion_file(BUNDLED_MOTIONS) if m.key == "stand")
    path = tmp_path / "lean.npz"
    save_motions_npz(path, [stand, _lean(stand, 0.35)])  # 20 degrees: the centre of mass ~30 cm ahead of the toes
    with pytest.raises(SystemExit) as exit_info:
        main(["motions", "validate", str(path), "--dynamics"])
    assert exit_info.value.code == 0  # a warning: the file is fine, this body cannot follow it
    lines = capsys.readouterr().out.strip().splitlines()
    dynamic = [line for line in lines if "ground forces" in line]
    assert len(dynamic) == 1 and dynamic[0].startswith("warning:") and "'lean'" in dynamic[0], lines
    # every frame but the two ends (no central difference there) is a static lean off the feet
    frames = stand.num_frames - 2
    assert f"{frames} of {frames} frames" in dynamic[0] and "in 1 stretch(es)" in dynamic[0]
    moment = float(dynamic[0].split("CoP up to ")[1].split(" m ")[0])
    assert 0.15 < moment < 0.45


@pytest.mark.skipif(not CMU.is_file(), reason="the CMU example clip is not beside the project")
def test_the_cmu_clip_needs_its_standing_kick_off_the_feet(model: mujoco.MjModel) -> None:
    """The real clip on the mean-shape skeleton: fine while standing, off its feet from the kick at 1.2 s on."""
    lib = MotionLibrary(str(CMU))
    ((mid, text),) = dynamics_findings(lib, model)
    listed = [(float(a), float(b)) for a, b in re.findall(r"(\d+\.\d+)-(\d+\.\d+) s", text)]
    assert any(a == 1.2 and b < 1.9 for a, b in listed), text  # the standing kick, its left foot 1.8 m up
    needs = ground_needs(lib, mid, model)
    assert float(np.nanmax(needs.unbalanced_moment()[:14])) < 0.03  # the first 0.45 s stands on its feet
    assert float(needs.unbalanced_moment()[36:48].max()) > 0.2
    assert infeasible_frames(needs).sum() >= 80  # 98 of 220: the kick, a second one, a jump


@pytest.mark.skipif(not WALKS.is_file(), reason="the real ACCAD walks are not beside the project")
def test_the_real_accad_walks_are_followable(model: mujoco.MjModel) -> None:
    """Ordinary walking (straight, turns, backwards; stance feet floating 2-8 cm on this skeleton) needs nothing
    the feet cannot give: at least 95 % of the frames of every clip (all 10: 99-100 %; the 5 cm contact height,
    the nearest-corner hull distance and every force in short flights made it 0-58 % on four of them)."""
    lib = MotionLibrary(str(WALKS))
    for mid, key in enumerate(lib.keys):
        bad = infeasible_frames(ground_needs(lib, mid, model))
        assert 1.0 - bad.sum() / (len(bad) - 2) >= 0.95, f"{key}: {np.flatnonzero(bad)}"


@pytest.mark.skipif(not HARD.is_file(), reason="the real ACCAD clips are not beside the project")
def test_the_real_hop_is_a_flight_that_needs_no_force(model: mujoco.MjModel) -> None:
    """ACCAD's walk-hop-walk leaves the floor for 4 frames at 3.17-3.27 s, both feet 13-17 cm up: a flight, and a
    ballistic one (0.06-0.19 body weights there are the smoothing's spread of take-off and landing)."""
    lib = MotionLibrary([m for m in load_motion_file(HARD) if "hop" in m.key])
    needs = ground_needs(lib, 0, model)
    flight = np.flatnonzero(needs.flight)
    assert len(flight) >= 3 and 3.1 < flight[0] / 30.0 and flight[-1] / 30.0 < 3.4, flight
    assert not infeasible_frames(needs)[flight].any()
