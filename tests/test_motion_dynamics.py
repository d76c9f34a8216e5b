"""Dynamic plausibility of the built-in motions: the centre of pressure each frame needs lies on the feet.

``mujoco.mj_inverse`` gives the force and moment the floor must apply to the pelvis' free joint for the
reference's accelerations; their centre of pressure must lie inside the support polygon (foot-box corners within
5 mm of the floor), or no controller can follow the clip. Flight frames (no foot down) are left out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Tuple

import mujoco
import numpy as np
import pytest

import phc_lightning
from phc_lightning.motion import BUNDLED_MOTIONS
from phc_lightning.motion.library import MotionLibrary

# Least fraction of (flight-free) frames whose needed CoP is within 2 cm of the support polygon. The walking
# clips are not yet fully there (jog: ballistic flights, 93 %).
MIN_FEASIBLE = {"stand": 1.0, "squat": 1.0, "wave": 1.0, "walk": 0.9, "turn": 0.85, "walk_circle": 0.95, "jog": 0.9}


def _hull_distance(points: np.ndarray, q: np.ndarray) -> float:
    """Signed distance of ``q`` outside the convex hull of 2-D ``points`` (negative inside)."""
    pts = sorted(set(map(tuple, np.round(points, 6))))

    def cross(o, a, b):  # type: ignore[no-untyped-def]
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower, upper = [], []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    hull = np.array(lower[:-1] + upper[:-1])
    edges = np.roll(hull, -1, 0) - hull
    normals = np.stack([edges[:, 1], -edges[:, 0]], 1) / np.linalg.norm(edges, axis=1, keepdims=True)
    return float(((q - hull) * normals).sum(1).max())


def _box_corners(data: mujoco.MjData, model: mujoco.MjModel, gid: int) -> np.ndarray:
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=float)
    return data.geom_xpos[gid] + (signs * model.geom_size[gid]) @ data.geom_xmat[gid].reshape(3, 3).T


def _needed_ground_wrench(lib: MotionLibrary, mid: int, model: mujoco.MjModel) -> Tuple[np.ndarray, np.ndarray]:
    """Per frame of motion ``mid``: the distance (m) of the needed CoP outside the support polygon (NaN in flight),
    and the ground force's shortfall in body weights: how much it would have to pull (Fz < 0) or exceed the
    friction cone (mu = 1, the MJCF's). The first and last frames, without central differences, are NaN / 0."""
    data = mujoco.MjData(model)
    feet = [model.geom(f"{s}_{b}").id for s in "LR" for b in ("Ankle", "Toe")]
    weight = float(model.body_subtreemass[1]) * 9.81
    f0, n, fps = int(lib.frame_start[mid]), int(lib.num_frames[mid]), float(lib.fps[mid])
    br = lib.body_rot[f0 : f0 + n].double().numpy()
    q = np.concatenate(
        [lib.body_pos[f0 : f0 + n, 0].double().numpy(), br[:, 0, 3:4], br[:, 0, :3],
         lib.dof_pos[f0 : f0 + n].double().numpy()], 1,
    )  # fmt: skip
    v = np.zeros((n, model.nv))
    for i in range(n - 1):
        mujoco.mj_differentiatePos(model, v[i], 1.0 / fps, q[i], q[i + 1])
    dist, shortfall = np.full(n, np.nan), np.zeros(n)
    for i in range(1, n - 1):
        data.qpos[:], data.qvel[:] = q[i], 0.5 * (v[i - 1] + v[i])
        data.qacc[:] = (v[i] - v[i - 1]) * fps
        mujoco.mj_inverse(model, data)
        force = data.qfrc_inverse[:3]
        torque = data.xmat[1].reshape(3, 3) @ data.qfrc_inverse[3:6]
        down = np.concatenate([_box_corners(data, model, g) for g in feet])
        down = down[down[:, 2] < 0.005]
        if len(down) < 3:
            continue  # flight
        shortfall[i] = (max(-force[2], 0.0) + max(np.hypot(force[0], force[1]) - max(force[2], 0.0), 0.0)) / weight
        o = q[i, :3]
        cop = np.array([o[0] - (torque[1] + o[2] * force[0]) / force[2],
                        o[1] + (torque[0] - o[2] * force[1]) / force[2]])  # fmt: skip
        dist[i] = _hull_distance(down[:, :2], cop) if force[2] > 0 else np.inf
    return dist, shortfall


def _median3(x: np.ndarray) -> np.ndarray:
    """3-frame median (NaN-aware; NaN where all three are): finite-difference accelerations make single frames noisy."""
    return np.array(
        [np.nan if np.isnan(w).all() else np.nanmedian(w) for w in (x[max(0, i - 1) : i + 2] for i in range(len(x)))]
    )


@pytest.fixture(scope="module")
def needed() -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    model = mujoco.MjModel.from_xml_path(str(Path(phc_lightning.__file__).parent / "assets" / "smpl_humanoid.xml"))
    lib = MotionLibrary(BUNDLED_MOTIONS)
    return {key: _needed_ground_wrench(lib, mid, model) for mid, key in enumerate(lib.keys)}


def test_every_clip_needs_a_centre_of_pressure_on_its_feet(needed: Dict[str, Tuple[np.ndarray, np.ndarray]]) -> None:
    assert sorted(needed) == sorted(MIN_FEASIBLE)
    for key, (dist, _) in needed.items():
        med = _median3(dist[1:-1])
        med = med[~np.isnan(med)]
        frac = float((med <= 0.02).mean())
        assert frac >= MIN_FEASIBLE[key], f"{key}: only {frac:.0%} of frames have their CoP on the feet"


def test_every_clip_starts_with_ground_forces_the_feet_can_give(
    needed: Dict[str, Tuple[np.ndarray, np.ndarray]],
) -> None:
    """The evaluation starts every clip at frame 0, standing, so the first second must be followable: the ground
    pushes (never pulls), inside the friction cone, from under the feet. jog used to start moving at once and lift
    its first foot at 0.25 s, asking the ground to pull the body down for 4 frames and then to push from 20-30 cm
    behind the heels; the policies learned every part of jog except that start."""
    for key, (dist, shortfall) in needed.items():
        second = slice(1, 31)
        # 3 cm: walk's first heel strike (frame 29) needs its CoP 2.7 cm beyond the toes of the trailing foot.
        cop_off = _median3(np.nan_to_num(dist[second], nan=0.0)) > 0.03
        force_off = _median3(shortfall[second]) > 0.05
        assert not (cop_off | force_off).any(), f"{key}: frames {np.flatnonzero(cop_off | force_off) + 1}"
