"""The SMPL humanoid skeleton shared by the MJCF model, the motion library and the task.

Body order is PHC's ``SMPL_MUJOCO_NAMES``. Every non-root body has three hinges
``<name>_x``, ``<name>_y``, ``<name>_z`` (69 DoF in body order, x before y before z);
the pelvis has a free joint. Rest pose is a T-pose facing +x with left = +y and up = +z.
"""

from __future__ import annotations

import math
from typing import Dict, List, Tuple

BODY_NAMES: Tuple[str, ...] = (
    "Pelvis", "L_Hip", "L_Knee", "L_Ankle", "L_Toe", "R_Hip", "R_Knee", "R_Ankle", "R_Toe",
    "Torso", "Spine", "Chest", "Neck", "Head",
    "L_Thorax", "L_Shoulder", "L_Elbow", "L_Wrist", "L_Hand",
    "R_Thorax", "R_Shoulder", "R_Elbow", "R_Wrist", "R_Hand",
)  # fmt: skip
NUM_BODIES = len(BODY_NAMES)
NUM_DOFS = 3 * (NUM_BODIES - 1)
BODY_INDEX: Dict[str, int] = {name: i for i, name in enumerate(BODY_NAMES)}

# Parent of each body (-1 for the root).
PARENTS: Tuple[int, ...] = (-1, 0, 1, 2, 3, 0, 5, 6, 7, 0, 9, 10, 11, 12, 11, 14, 15, 16, 17, 11, 19, 20, 21, 22)

# Neutral SMPL offsets of each body relative to its parent, metres, in the rest (T-pose) frame.
OFFSETS: Tuple[Tuple[float, float, float], ...] = (
    (0.0, 0.0, 0.0),
    (-0.0068, 0.0695, -0.0914), (-0.0045, 0.0343, -0.3752), (-0.0437, -0.0136, -0.398), (0.1193, 0.0264, -0.0558),
    (-0.0043, -0.0677, -0.0905), (-0.0089, -0.0383, -0.3826), (-0.0423, 0.0158, -0.3984), (0.1233, -0.0254, -0.0481),
    (-0.0267, -0.0025, 0.109), (0.0011, 0.0055, 0.1352), (0.0254, 0.0015, 0.0529), (-0.0429, -0.0028, 0.2139),
    (0.0513, 0.0052, 0.065),
    (-0.0341, 0.0788, 0.1217), (-0.0089, 0.091, 0.0305), (-0.0275, 0.2596, -0.0128), (-0.0012, 0.2492, 0.009),
    (-0.0149, 0.084, -0.0082),
    (-0.0386, -0.0818, 0.1188), (-0.0091, -0.096, 0.0326), (-0.0214, -0.2537, -0.0133), (-0.0056, -0.2553, 0.0078),
    (-0.0103, -0.0846, -0.0061),
)

DOF_NAMES: Tuple[str, ...] = tuple(f"{name}_{axis}" for name in BODY_NAMES[1:] for axis in "xyz")


def body_dofs(name: str) -> List[int]:
    """Indices into the 69-vector of the three hinges of body ``name``."""
    i = BODY_INDEX[name]
    if i == 0:
        raise ValueError("the pelvis has a free joint, not hinges")
    return [3 * (i - 1) + k for k in range(3)]


# Bodies whose PD targets are frozen at 0 (PHC does not control hands and toes): 57 DoF stay controlled.
FROZEN_BODIES: Tuple[str, ...] = ("L_Toe", "R_Toe", "L_Hand", "R_Hand")
FROZEN_DOFS: Tuple[int, ...] = tuple(d for b in FROZEN_BODIES for d in body_dofs(b))
# The knee's flexion hinge (y) gets a larger action scale than pi in PHC.
KNEE_DOFS: Tuple[int, ...] = (body_dofs("L_Knee")[1], body_dofs("R_Knee")[1])
ACTION_SCALE = math.pi
KNEE_ACTION_SCALE = 5.0

# The 20 bodies used by the evaluation failure test (all but hands and toes).
EVAL_BODIES: Tuple[int, ...] = tuple(i for i, n in enumerate(BODY_NAMES) if n not in FROZEN_BODIES)
FOOT_BODIES: Tuple[int, ...] = tuple(BODY_INDEX[n] for n in ("L_Ankle", "L_Toe", "R_Ankle", "R_Toe"))

# PD gains (kp, kd) per body, DESIGN §2.
_GAINS = {
    ("L_Hip", "L_Knee", "L_Ankle", "R_Hip", "R_Knee", "R_Ankle"): (800.0, 80.0),
    ("L_Toe", "R_Toe"): (500.0, 50.0),
    ("Torso", "Spine", "Chest"): (1000.0, 100.0),
    ("Neck", "Head", "L_Thorax", "L_Shoulder", "L_Elbow", "R_Thorax", "R_Shoulder", "R_Elbow"): (500.0, 50.0),
    ("L_Wrist", "L_Hand", "R_Wrist", "R_Hand"): (300.0, 30.0),
}
PD_GAINS: Dict[str, Tuple[float, float]] = {name: gains for names, gains in _GAINS.items() for name in names}
ARMATURE = 0.02

# Timing: 4 MuJoCo steps of 1/120 s per 30 Hz control step.
PHYSICS_DT = 1.0 / 120.0
SUBSTEPS = 4
CONTROL_DT = PHYSICS_DT * SUBSTEPS

# Distance from each foot body's origin down to its sole in the rest pose (metres). The MJCF foot boxes
# are sized so these hold (a rest-pose foot is flat), and the motion library's height fix uses them.
TOE_SOLE_DEPTH = 0.02
SOLE_DEPTH: Dict[str, float] = {
    "L_Ankle": TOE_SOLE_DEPTH - OFFSETS[BODY_INDEX["L_Toe"]][2],
    "L_Toe": TOE_SOLE_DEPTH,
    "R_Ankle": TOE_SOLE_DEPTH - OFFSETS[BODY_INDEX["R_Toe"]][2],
    "R_Toe": TOE_SOLE_DEPTH,
}
