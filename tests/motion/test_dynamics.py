"""Dynamic plausibility of motions on this humanoid (``phc_lightning.motion.dynamics``, ``validate --dynamics``).

``mujoco.mj_inverse`` gives the force and moment the floor must apply to the pelvis' free joint for the
reference's accelerations; the feet can give it only if it pushes, stays in the friction cone, and has its centre
of pressure inside the support polygon. The bundled clips must be followable; a lean no foot can hold, and the
real CMU clip's standing kick, must be reported.
"""

from __future__ import annotations

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
from phc_lightning.motion.dynamics import GroundNeeds, dynamics_findings, ground_needs, hull_distance, median3
from phc_lightning.motion.formats import load_motion_file, save_motions_npz
from phc_lightning.motion.library import MotionLibrary
from phc_lightning.motion.raw_motion import RawMotion
from phc_lightning.sim.mujoco_cpu import load_model
from tests.helpers import CMU_PKL as CMU


@pytest.fixture(scope="module")
def model() -> mujoco.MjModel:
    return load_model()


@pytest.fixture(scope="module")
def strict(model: mujoco.MjModel) -> Dict[str, GroundNeeds]:
    """The bundled clips at frame precision: raw differences, only corners within 5 mm of the floor bear weight."""
    lib = MotionLibrary(BUNDLED_MOTIONS, velocity_smoothing=0.0)
    return {key: ground_needs(lib, mid, model, contact_height=0.005) for mid, key in enumerate(lib.keys)}


def _lean(stand: RawMotion, angle: float) -> RawMotion:
    """``stand`` with the whole body tilted forward by ``angle`` about its pelvis, then put back on the floor."""
    tilt = quat_from_axis_angle(torch.tensor([0.0, 1.0, 0.0]), torch.tensor(angle))
    rot = quat_mul(tilt.expand(stand.num_frames, 24, 4), torch.from_numpy(stand.global_rot))
    return place_on_floor(RawMotion("lean", stand.fps, stand.root_pos.copy(), rot.numpy().astype(np.float32)))


def test_hull_distance_is_signed() -> None:
    square = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.5, 0.5]])
    assert hull_distance(square, np.array([0.5, 0.25])) == pytest.approx(-0.25)
    assert hull_distance(square, np.array([1.5, 0.5])) == pytest.approx(0.5)
    assert hull_distance(square, np.array([2.0, 2.0])) == pytest.approx(2**0.5)  # off a vertex: Euclidean


def test_hull_distance_of_one_or_two_corners_or_collinear_ones() -> None:
    """A heel line or one corner down has no inside: a CoP on it is at 0, beside it at its perpendicular
    distance (main measured to the nearest corner: 0.5 m for a CoP halfway along a 1 m segment)."""
    segment = np.array([[0.0, 0.0], [1.0, 0.0]])
    assert hull_distance(segment, np.array([0.5, 0.0])) == 0.0
    assert hull_distance(segment, np.array([0.5, 0.3])) == pytest.approx(0.3)
    assert hull_distance(segment, np.array([1.4, 0.3])) == pytest.approx(0.5)  # beyond an end: to that end
    collinear = np.array([[0.0, 0.0], [2.0, 2.0], [0.5, 0.5], [1.0, 1.0]])
    assert hull_distance(collinear, np.array([1.5, 1.5])) == 0.0
    assert hull_distance(collinear, np.array([1.0, 0.0])) == pytest.approx(0.5**0.5)
    assert hull_distance(np.array([[1.0, 1.0], [1.0, 1.0]]), np.array([1.0, 1.5])) == pytest.approx(0.5)


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
    """The real clip on the mean-shape skeleton: fine while standing, off its feet through the kick at 1.2-1.6 s."""
    lib = MotionLibrary(str(CMU))
    ((mid, text),) = dynamics_findings(lib, model)
    assert "1.20-1.83 s" in text, text
    needs = ground_needs(lib, mid, model)
    assert float(np.nanmax(needs.unbalanced_moment()[:14])) < 0.03  # the first 0.45 s stands on its feet
