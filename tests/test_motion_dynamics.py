"""Dynamic plausibility of the built-in motions: the centre of pressure each frame needs lies on the feet.

``mujoco.mj_inverse`` gives the force and moment the floor must apply to the pelvis' free joint for the
reference's accelerations; their centre of pressure must lie inside the support polygon (foot-box corners within
5 mm of the floor), or no controller can follow the clip. Flight frames (no foot down) are left out.
"""

from __future__ import annotations

from pathlib import Path

import mujoco
import numpy as np

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


def test_every_clip_needs_a_centre_of_pressure_on_its_feet() -> None:
    model = mujoco.MjModel.from_xml_path(str(Path(phc_lightning.__file__).parent / "assets" / "smpl_humanoid.xml"))
    data = mujoco.MjData(model)
    feet = [model.geom(f"{s}_{b}").id for s in "LR" for b in ("Ankle", "Toe")]
    lib = MotionLibrary(BUNDLED_MOTIONS)
    assert sorted(lib.keys) == sorted(MIN_FEASIBLE)
    for mid, key in enumerate(lib.keys):
        f0, n, fps = int(lib.frame_start[mid]), int(lib.num_frames[mid]), float(lib.fps[mid])
        br = lib.body_rot[f0 : f0 + n].double().numpy()
        q = np.concatenate(
            [lib.body_pos[f0 : f0 + n, 0].double().numpy(), br[:, 0, 3:4], br[:, 0, :3],
             lib.dof_pos[f0 : f0 + n].double().numpy()], 1,
        )  # fmt: skip
        v = np.zeros((n, model.nv))
        for i in range(n - 1):
            mujoco.mj_differentiatePos(model, v[i], 1.0 / fps, q[i], q[i + 1])
        dist = np.full(n, np.nan)
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
            o = q[i, :3]
            cop = np.array([o[0] - (torque[1] + o[2] * force[0]) / force[2],
                            o[1] + (torque[0] - o[2] * force[1]) / force[2]])  # fmt: skip
            dist[i] = _hull_distance(down[:, :2], cop)
        # A 3-frame median: finite-difference accelerations make single frames noisy.
        med = np.array([np.nanmedian(w) for w in (dist[max(0, i - 1) : i + 2] for i in range(1, n - 1))
                        if not np.isnan(w).all()])  # fmt: skip
        frac = float((med <= 0.02).mean())
        assert frac >= MIN_FEASIBLE[key], f"{key}: only {frac:.0%} of frames have their CoP on the feet"
