"""Built-in reference motions generated procedurally (no mocap can be shipped).

Seven clips at 30 fps, each starting from a relaxed standing pose (arms down, not the T-pose):
``stand``, ``walk`` (1.0 m/s), ``walk_circle`` (0.9 m/s, radius 1 m, > 270 degrees), ``turn`` (180 degrees on the
spot, stepping), ``squat``, ``wave`` (right hand above the head) and ``jog`` (2.0 m/s, short ballistic flight phases).

Method: a pelvis path (position + heading) drives a footstep plan (:mod:`phc_lightning.motion.synthetic.gait`: a
planted foot lies flat or rolls over its fixed toe tip, so it never slides; swings follow the path); the
pelvis of the stepping clips follows a balance plan (:mod:`phc_lightning.motion.synthetic.gait_plan`: the centre of
pressure it needs stays on the feet); the pelvis height is a per-clip target capped by what the legs can reach
(so it bobs like an inverted pendulum), then blurred; the legs are solved with exact two-link IK; the trunk
counter-rotates, the arms swing against the legs and the head keeps a level gaze. Local rotations go through
:func:`phc_lightning.motion.fk.local_to_global`. Every clip keeps each hinge-angle decomposition
(:func:`phc_lightning.motion.fk.local_to_dof`) away from gimbal lock (knees below 90 degrees of flexion).
Everything is deterministic (no randomness, float64 maths, outputs rounded to 1e-5 before the float32 cast)
so the shipped file regenerates byte-identically::

    python -m phc_lightning.motion.synthetic --out phc_lightning/assets/motions.npz
"""

from __future__ import annotations

import argparse
import math
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from phc_lightning.core import skeleton
from phc_lightning.core.rotations import (
    exp_map_to_quat,
    quat_conjugate,
    quat_from_axis_angle,
    quat_mul,
    quat_rotate,
    quat_to_exp_map,
    slerp,
)
from phc_lightning.motion import BUNDLED_MOTIONS, fk
from phc_lightning.motion.formats import save_motions_npz
from phc_lightning.motion.raw_motion import MotionFileError, RawMotion
from phc_lightning.motion.synthetic.gait import (
    DTYPE,
    Gait,
    PathFn,
    Stance,
    align_rotation,
    axis_quat,
    lower_body,
    min_jerk,
    offset,
    yaw_roll_pitch,
)

Tensor = torch.Tensor
FPS = 30.0
ARM_DROP = math.radians(75.0)  # shoulders rotated about x by -/+75 deg from the T-pose: arms hang at the sides
STAND_HEIGHT = 0.94  # pelvis height target when standing; the legs' reach caps it just below
SQUAT_DROP = 0.3  # how far the squat lowers the pelvis target, metres
# How far ahead of its rest (T-pose) offset under the hip each foot stands, metres. At the rest offset the SMPL
# legs slope back (ankles 4.8 cm behind the hips) and the standing centre of mass sits 4.3-5.8 cm ahead of the
# ankles. Held by PD targets alone (no gravity feed-forward), the humanoid must lean until the ankle error makes the
# torque, which carries the COM further forward: it settles ~1.8x the reference's lead ahead of the ankles, so
# 5.5 cm already reaches the toe joints where the rigid foot ends (12 cm), the heel lifts and it topples. 3 cm
# puts the standing COM 1.7-3.3 cm ahead of the ankles, about the middle of the rigid foot (heel -5, toe joint +12 cm).
FOOT_DX = 0.03
_ROUND = 5  # decimals kept before the float32 cast: hides last-ulp differences between CPUs and torch builds


# ----------------------------------------------------------------------------------------------- paths
def _times(duration: float) -> Tensor:
    return torch.arange(int(round(duration * FPS)) + 1, dtype=DTYPE) / FPS


def _stance(**kwargs: float) -> Stance:
    """Foot placement of every clip: :data:`FOOT_DX` ahead of the rest offset, other fields as given."""
    return Stance(dx=FOOT_DX, **kwargs)


def _still_path(heading: float = 0.0) -> PathFn:
    return lambda t: (torch.zeros(t.shape + (2,), dtype=DTYPE), torch.full_like(t, heading))


def _min_jerk_integral(s: Tensor) -> Tensor:
    """Integral of :func:`min_jerk` from 0 to ``s`` (0 below 0, growing linearly after 1)."""
    c = s.clamp(0.0, 1.0)
    return c**4 * (2.5 - 3.0 * c + c * c) + (s - 1.0).clamp_min(0.0)


def _distance(t: Tensor, speed: float, ramp: float, delay: float = 0.0) -> Tensor:
    """Arc length travelled when the speed eases from 0 to ``speed`` over ``ramp`` seconds from ``delay``."""
    return speed * ramp * _min_jerk_integral((t - delay) / ramp)


def _straight_path(speed: float, ramp: float, delay: float = 0.0) -> PathFn:
    return lambda t: (torch.stack([_distance(t, speed, ramp, delay), torch.zeros_like(t)], -1), torch.zeros_like(t))


def _circle_path(speed: float, ramp: float, radius: float, delay: float = 0.0) -> PathFn:
    """Counter-clockwise circle starting at the origin heading +x (centre at (0, radius))."""

    def path(t: Tensor) -> Tuple[Tensor, Tensor]:
        angle = _distance(t, speed, ramp, delay) / radius
        return torch.stack([radius * torch.sin(angle), radius * (1.0 - torch.cos(angle))], -1), angle

    return path


def _turn_path(angle: float, start: float, duration: float) -> PathFn:
    return lambda t: (torch.zeros(t.shape + (2,), dtype=DTYPE), angle * min_jerk((t - start) / duration))


def _window(t: Tensor, rise: Tuple[float, float], fall: Optional[Tuple[float, float]] = None) -> Tensor:
    """0 -> 1 over ``rise`` (start, end seconds) and back to 0 over ``fall``, minimum-jerk edges."""
    w = min_jerk((t - rise[0]) / (rise[1] - rise[0]))
    if fall is not None:
        w = w * (1.0 - min_jerk((t - fall[0]) / (fall[1] - fall[0])))
    return w


# ----------------------------------------------------------------------------------------------- body parts
def _quat_pow(q: Tensor, s: float) -> Tensor:
    """The rotation ``q`` scaled by ``s`` about the same axis (``_quat_pow(q, 1/3)`` cubed is ``q``)."""
    return exp_map_to_quat(s * quat_to_exp_map(q))


def _trunk(
    pelvis_rot: Tensor,
    heading: Tensor,
    lean: Tensor,
    roll: Tensor,
    twist: Tensor,
    head_pitch: Tensor,
    head_yaw: Tensor,
) -> Dict[str, Tensor]:
    """Spine and neck locals from a chest target (world heading + twist, roll, forward lean) and a head target.

    The pelvis-to-chest rotation is spread equally over Torso, Spine and Chest, chest-to-head over Neck and Head.
    """
    chest = yaw_roll_pitch(heading + twist, roll, lean)
    spine = _quat_pow(quat_mul(quat_conjugate(pelvis_rot), chest), 1.0 / 3.0)
    head = yaw_roll_pitch(heading + head_yaw, torch.zeros_like(heading), head_pitch)
    neck = _quat_pow(quat_mul(quat_conjugate(chest), head), 0.5)
    return {"Torso": spine, "Spine": spine, "Chest": spine, "Neck": neck, "Head": neck}


def _hanging(side: str, swing: Tensor, elbow: Tensor) -> Tuple[Tensor, Tensor]:
    """Upper-arm and forearm directions ``[T, 3]`` (chest frame) of an arm hanging at the side (the shoulder
    turned ARM_DROP from the T-pose), swung forward by ``swing`` and bent forward at the elbow by ``elbow``."""
    side_out = (1.0 if side == "L" else -1.0) * math.cos(ARM_DROP)
    down = math.sin(ARM_DROP)

    def direction(angle: Tensor) -> Tensor:
        return torch.stack([down * torch.sin(angle), torch.full_like(angle, side_out), -down * torch.cos(angle)], -1)

    return direction(swing), direction(swing + elbow)


def _arm(side: str, upper: Tensor, fore: Tensor) -> Tuple[Tensor, Tensor]:
    """Shoulder and elbow locals ``[T, 4]`` pointing the upper arm along ``upper`` and the forearm along ``fore``.

    Directions are in the thorax (= chest) frame. The elbow bends about its local z axis toward the arm's
    local +x (forward in the T-pose), so the shoulder's twist puts local +x in the (upper, fore) plane.
    """
    axis = offset(f"{side}_Elbow")
    x_axis = torch.tensor([1.0, 0.0, 0.0], dtype=DTYPE)
    shoulder = align_rotation(axis, x_axis, upper, fore)
    bend = torch.atan2(torch.cross(upper, fore, dim=-1).norm(dim=-1), (upper * fore).sum(-1))
    return shoulder, axis_quat(2, (-1.0 if side == "L" else 1.0) * bend)


def _arms_down(swing: Tensor, elbow: float = 0.15) -> Dict[str, Tensor]:
    """Both arms hanging, swung forward together by ``swing [T]`` (relative to the chest), elbows slightly bent."""
    out = {}
    for side in "LR":
        upper, fore = _hanging(side, swing, torch.full_like(swing, elbow))
        out[f"{side}_Shoulder"], out[f"{side}_Elbow"] = _arm(side, upper, fore)
    return out


def _swinging_arms(lower: Dict[str, Tensor], amp: float, elbow: Tensor, elbow_amp: float) -> Dict[str, Tensor]:
    """Arms swinging against the legs (left arm forward with the right foot), elbows bending as they come forward."""
    stride = lower["stride"].clamp(-1.2, 1.2)
    out = {}
    for side, sign in (("L", 1.0), ("R", -1.0)):
        swing = sign * amp * stride
        upper, fore = _hanging(side, swing, elbow + elbow_amp * swing.clamp_min(0.0))
        out[f"{side}_Shoulder"], out[f"{side}_Elbow"] = _arm(side, upper, fore)
    return out


def _finish(key: str, root_pos: Tensor, parts: Dict[str, Tensor]) -> RawMotion:
    """Assemble local rotations by body name (missing bodies stay at rest) into a :class:`RawMotion`."""
    local = torch.zeros(root_pos.shape[0], skeleton.NUM_BODIES, 4, dtype=DTYPE)
    local[..., 3] = 1.0
    local[:, 0] = parts["pelvis_rot"]
    for name, q in parts.items():
        if name in skeleton.BODY_INDEX:
            local[:, skeleton.BODY_INDEX[name]] = q
    rot = fk.local_to_global(local)
    rot = rot / rot.norm(dim=-1, keepdim=True)
    # Continuous quaternion signs over time (w >= 0 in the first frame): nicer for anyone differencing them.
    flips = torch.where((rot[1:] * rot[:-1]).sum(-1) < 0, -1.0, 1.0).cumprod(0)
    rot = torch.cat([rot[:1], rot[1:] * flips[..., None]]) * torch.where(rot[:1, :, 3:] < 0, -1.0, 1.0)
    return RawMotion(key=key, fps=FPS, root_pos=_quantize(root_pos), global_rot=_quantize(rot))


def _quantize(x: Tensor) -> np.ndarray:
    """float32 copy rounded to ``_ROUND`` decimals; ``+ 0.0`` turns -0.0 into 0.0 (its sign is last-ulp noise)."""
    return (np.round(x.numpy(), _ROUND) + 0.0).astype(np.float32)


# ----------------------------------------------------------------------------------------------- the clips
def _standing_upper(lower: Dict[str, Tensor], t: Tensor) -> Dict[str, Tensor]:
    """Quiet-standing trunk and head: slow breathing lean, a little twist and gaze wander."""
    breath = torch.sin(2.0 * math.pi * t / 4.0)
    zero = torch.zeros_like(t)
    return _trunk(
        lower["pelvis_rot"], lower["heading"], lean=0.01 + 0.012 * breath, roll=zero,
        twist=0.03 * torch.sin(2.0 * math.pi * t / 5.0), head_pitch=0.02 * torch.sin(2.0 * math.pi * t / 3.1),
        head_yaw=0.08 * torch.sin(2.0 * math.pi * t / 4.6),
    )  # fmt: skip


def _stand() -> RawMotion:
    t = _times(4.0)
    zero = torch.zeros_like(t)
    # Slow weight shifting over planted feet.
    shift = torch.stack([0.008 * torch.sin(2.0 * math.pi * t / 5.0), 0.015 * torch.sin(2.0 * math.pi * t / 3.7)], -1)
    lower = lower_body(
        t, _still_path(), None, _stance(), torch.full_like(t, STAND_HEIGHT), zero + 0.02, knee_min=0.02, shift=shift
    )
    arms = _arms_down(0.03 + 0.02 * torch.sin(2.0 * math.pi * t / 4.0))  # with the breathing
    return _finish("stand", lower["root_pos"], {**lower, **_standing_upper(lower, t), **arms})


def _gait_clip(
    key: str,
    duration: float,
    path: PathFn,
    gait: Gait,
    ramp: float,
    pitch: float,
    lean: float,
    knee_min: float,
    arm_amp: float,
    elbow: float,
    stance: Optional[Stance] = None,
    turn_lean: float = 0.0,
    dip: float = 0.0,
    sway: float = 0.02,
    yaw_amp: float = 0.08,
    crouch: float = 0.0,
    first_shift: Optional[float] = 0.4,
    com_ahead: float = 0.016,
) -> RawMotion:
    """A locomotion clip: start standing, ease into the gait over ``ramp`` seconds and keep going.

    ``crouch`` lowers the pelvis target while moving (bent-knee midstance), ``knee_min`` is the least knee
    flexion once moving; both ease in with the speed so the clip starts standing tall.
    """
    t = _times(duration)
    ramp_in = min_jerk(t / ramp)
    lower = lower_body(
        t, path, gait, stance or _stance(), STAND_HEIGHT - crouch * ramp_in, 0.02 + pitch * ramp_in,
        knee_min=0.02 + (knee_min - 0.02) * ramp_in, sway=sway, roll_amp=0.04, yaw_amp=yaw_amp,
        lean=0.4 * turn_lean * ramp_in, dip=dip * ramp_in, first_shift=first_shift,
        shift=None if first_shift is None else torch.stack([-com_ahead * ramp_in, torch.zeros_like(t)], -1),
    )  # fmt: skip
    heading = lower["heading"]
    # Shoulders counter-rotate against the pelvis; the head looks a little ahead along the path.
    upper = _trunk(
        lower["pelvis_rot"], heading, lean=0.02 + lean * ramp_in, roll=turn_lean * ramp_in,
        twist=-0.6 * yaw_amp * lower["stride"].clamp(-1.2, 1.2), head_pitch=torch.zeros_like(t),
        head_yaw=path(t + 0.3)[1] - heading,
    )  # fmt: skip
    arms = _swinging_arms(lower, arm_amp, 0.15 + elbow * ramp_in, elbow_amp=0.3)
    return _finish(key, lower["root_pos"], {**lower, **upper, **arms})


def _walk() -> RawMotion:
    # 1.0 m/s with 0.5 m steps: longer steps make the pelvis sink so deep in double support that the vertical
    # forces (and the CoP they imply) stop being plausible. The path starts 0.3 s late and the first foot lifts at
    # 0.55 s, once the weight is on the other foot (see gait_plan).
    gait = Gait(period=1.0, duty=0.6, first_swing=0.55, lift=0.09, heel_off=0.5, roll=0.25)
    return _gait_clip("walk", 5.0, _straight_path(1.0, 1.0, 0.3), gait, ramp=1.0, pitch=0.04, lean=0.03,
                      knee_min=0.08, arm_amp=0.35, elbow=0.15, crouch=0.02)  # fmt: skip


def _walk_circle() -> RawMotion:
    # On the balance plan like walk. A tight circle at walking speed makes the inner leg cap the pelvis height
    # (sharp drops, vertical forces near 0): 0.9 m/s on a 1 m circle with short quick steps (0.8 s strides) and a
    # deeper crouch keeps the needed CoP on the feet and still turns > 270 degrees in 6 s. Full pendulum lean.
    speed, radius = 0.9, 1.0
    gait = Gait(period=0.8, duty=0.6, first_swing=0.55, lift=0.08, heel_off=0.5, roll=0.25)
    lean = -speed**2 / (9.81 * radius)  # lean into the (left) turn
    return _gait_clip("walk_circle", 6.0, _circle_path(speed, 0.9, radius, 0.2), gait, ramp=0.9, pitch=0.04,
                      lean=0.03, knee_min=0.15, arm_amp=0.3, elbow=0.15, turn_lean=lean, crouch=0.08)  # fmt: skip


def _turn() -> RawMotion:
    gait = Gait(period=0.8, duty=0.65, first_swing=0.3, lead="L", lift=0.06)
    return _gait_clip("turn", 4.0, _turn_path(math.pi, 0.4, 3.2), gait, ramp=0.4, pitch=0.02, lean=0.02,
                      knee_min=0.1, arm_amp=0.1, elbow=0.1, sway=0.015, yaw_amp=0.0)  # fmt: skip


def _jog() -> RawMotion:
    # 2.0 m/s, quick 0.6 s strides, short flights: the pelvis falls freely in flight and is re-launched by a
    # spring-like push in stance (gait_plan.ballistic_height); longer/faster strides overreach the legs.
    # The start is a jogger's, not a sprinter's: the weight shifts for 0.3 s before the path moves, the speed
    # builds over 1.5 s and the first foot lifts at 0.85 s. Starting to move at once (1.2 s ramp, first lift at
    # 0.25 s) asked, by inverse dynamics, for the ground to pull the body down in the first frames and to push
    # from 20-30 cm behind the heels: no policy can follow that, and jog's start was the one part not learned.
    gait = Gait(period=0.6, duty=0.4, first_swing=0.85, lift=0.08, heel_off=0.5)
    stance = _stance(extra_width=-0.015, toe_out=0.05)
    return _gait_clip("jog", 5.0, _straight_path(2.0, 1.5, 0.3), gait, ramp=1.5, pitch=0.07, lean=0.08,
                      knee_min=0.35, arm_amp=0.35, elbow=1.1, stance=stance, dip=0.03, sway=0.01,
                      yaw_amp=0.1)  # fmt: skip


def _squat() -> RawMotion:
    t = _times(5.0)
    down = _window(t, (0.6, 2.1), (2.7, 4.2))
    zero = torch.zeros_like(t)
    # Sitting back: shins stay steep so the knee stays under 90 degrees of flexion (the hinge decomposition of
    # phc_lightning.motion.fk flips beyond that), the trunk leans forward and the arms reach forward to keep
    # the centre of mass over the feet.
    lower = lower_body(
        t, _still_path(), None, _stance(extra_width=0.16, toe_out=0.4), STAND_HEIGHT - SQUAT_DROP * down,
        0.02 + 0.35 * down, knee_min=0.02, shift=torch.stack([-0.22 * down, zero], -1),
    )  # fmt: skip
    lean = 0.8
    upper = _trunk(lower["pelvis_rot"], lower["heading"], lean=0.02 + lean * down, roll=zero, twist=zero,
                   head_pitch=0.3 * down, head_yaw=zero)  # fmt: skip
    # Swing is relative to the leaning chest: pi/2 + lean points the arms level forward in the world.
    arms = _arms_down(0.03 + (math.pi / 2 + lean - 0.1) * down)
    return _finish("squat", lower["root_pos"], {**lower, **upper, **arms})


def _wave() -> RawMotion:
    t = _times(5.0)
    zero = torch.zeros_like(t)
    lower = lower_body(t, _still_path(), None, _stance(), torch.full_like(t, STAND_HEIGHT), zero + 0.02,
                        knee_min=0.02)  # fmt: skip
    raised = _window(t, (0.5, 1.3), (3.7, 4.5))
    # Raised pose: upper arm forward, out and up, forearm up; waving rolls the forearm about the upper arm.
    # (Arm straight out to the side with the forearm up would put the shoulder's x-y-z hinges in gimbal lock.)
    up = torch.tensor([0.7, -0.45, 0.55], dtype=DTYPE).expand(t.shape[0], 3)
    fore0 = torch.tensor([0.0, 0.0, 1.0], dtype=DTYPE).expand(t.shape[0], 3)
    wag = 0.4 * torch.sin(2.0 * math.pi * 1.25 * (t - 1.3)) * _window(t, (1.1, 1.5), (3.5, 3.9))
    fore = quat_rotate(quat_from_axis_angle(up / up.norm(dim=-1, keepdim=True), wag), fore0)
    wave_shoulder, wave_elbow = _arm("R", up, fore)
    arms = _arms_down(0.03 + zero)
    arms["R_Shoulder"] = slerp(arms["R_Shoulder"], wave_shoulder, raised)
    arms["R_Elbow"] = slerp(arms["R_Elbow"], wave_elbow, raised)
    return _finish("wave", lower["root_pos"], {**lower, **_standing_upper(lower, t), **arms})


MOTIONS: Dict[str, Callable[[], RawMotion]] = {
    "stand": _stand,
    "walk": _walk,
    "walk_circle": _walk_circle,
    "turn": _turn,
    "squat": _squat,
    "wave": _wave,
    "jog": _jog,
}


def generate_all() -> List[RawMotion]:
    """Every built-in motion, in a fixed order, at 30 fps (deterministic: same arrays on every call)."""
    return [make() for make in MOTIONS.values()]


def main(argv: Optional[List[str]] = None) -> None:
    """Command line: write the built-in motions to ``--out`` (default: the bundled file)."""
    parser = argparse.ArgumentParser(
        prog="python -m phc_lightning.motion.synthetic", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", default=BUNDLED_MOTIONS, help="destination .npz (default: %(default)s)")
    args = parser.parse_args(argv)
    motions = generate_all()
    try:
        save_motions_npz(args.out, motions)
    except MotionFileError as e:
        parser.error(str(e))
    except OSError as e:
        parser.error(f"{args.out}: cannot write ({e.strerror or e})")
    for m in motions:
        travel = float(np.linalg.norm(m.root_pos[-1, :2] - m.root_pos[0, :2]))
        print(f"{m.key:12s} {m.num_frames:4d} frames  {(m.num_frames - 1) / m.fps:4.1f} s  travel {travel:5.2f} m")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
