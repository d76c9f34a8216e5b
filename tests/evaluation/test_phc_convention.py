"""Our evaluation convention and PHC's, from the same play of the motions.

The scripted cases put every body on its reference plus a hand-made offset (a kinematic stand-in for the physics
under the real task, playback, metrics and evaluation hooks), so each figure is known in closed form. The last case
plays real MuJoCo physics and checks PHC's figures against a line-by-line port of PHC's player.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
import pytest
import torch

from phc_lightning.core import skeleton
from phc_lightning.evaluation.metrics import ERROR_NAMES
from phc_lightning.evaluation.playback import play_motions
from phc_lightning.learner.module import PHCModule
from phc_lightning.motion import BUNDLED_MOTIONS
from phc_lightning.motion.library import MotionLibrary
from phc_lightning.sim.base import PhysicsBackend, SimState
from phc_lightning.sim.factory import make_backend
from phc_lightning.task.env import HumanoidTracking
from tests.evaluation.test_metrics import numpy_frame_errors

Offset = Callable[[int, int, int], float]
"""(env, play, step of the play) -> offset in metres."""

MOTIONS = MotionLibrary(BUNDLED_MOTIONS)  # 30 fps; motion 0: 121 frames (120 steps), motion 2: 181 frames
HANDS_TOES = [skeleton.BODY_INDEX[n] for n in ("L_Hand", "R_Hand", "L_Toe", "R_Toe")]


class ScriptedBackend(PhysicsBackend):
    """Every body on the env's reference plus ``offset(env, play, step)`` metres along x on ``bodies``."""

    def __init__(self, num_envs: int, offset: Offset, bodies: List[int]) -> None:
        self.num_envs, self.device, self.substeps, self.control_dt = num_envs, torch.device("cpu"), 1, 1.0 / 30.0
        self.offset, self.bodies = offset, bodies
        self.env: HumanoidTracking = None  # type: ignore[assignment]
        self.plays = torch.full((num_envs,), -1)  # resets so far: the first play is play 0

    def set_state(self, env_ids, root_pos, root_rot, root_vel, root_angvel, dof_pos, dof_vel) -> None:
        self.plays[env_ids] += 1

    def step(self, pd_targets: torch.Tensor) -> None:
        pass

    def state(self) -> SimState:
        ref = self.env.motions.get_state(self.env.motion_ids, self.env.motion_times)
        body_pos = ref.body_pos.clone()
        for i in range(self.num_envs):
            body_pos[i, self.bodies, 0] += self.offset(i, int(self.plays[i]), int(self.env.progress[i]))
        return SimState(body_pos, ref.body_rot, ref.body_vel, ref.body_angvel, ref.dof_pos, ref.dof_vel)

    def actuator_forces(self) -> torch.Tensor:
        return torch.zeros(self.num_envs, skeleton.NUM_DOFS)

    def unstable(self) -> torch.Tensor:
        return torch.zeros(self.num_envs, dtype=torch.bool)

    def get_physics_state(self) -> Dict[str, torch.Tensor]:
        return {}

    def set_physics_state(self, state: Dict[str, torch.Tensor]) -> None:
        pass


def module() -> PHCModule:
    torch.manual_seed(0)
    return PHCModule(residual_actions=True, action_scale=0.5, dof_action_scale={}, actor_hidden=[16],
                     critic_hidden=[16]).eval()


ALL_BODIES = tuple(range(skeleton.NUM_BODIES))


def scripted_eval(motion_ids: List[int], offset: Offset, bodies: Sequence[int] = ALL_BODIES) -> Dict[str, float]:
    """Both conventions' summary of one chunk: ``len(motion_ids)`` envs playing ``motion_ids``."""
    backend = ScriptedBackend(len(motion_ids), offset, list(bodies))
    env = HumanoidTracking(backend, MOTIONS)
    backend.env = env
    env.set_eval(True)
    policy = module()
    policy.on_validation_epoch_start()
    policy.validation_step(play_motions(env, policy, torch.tensor(motion_ids), zero_actions=True))
    return policy.eval_results()[0]


def test_a_motion_failing_midway_counts_its_replays_in_phcs_errors_only() -> None:
    # env 0 (motion 2, 180 steps) is 0.1 m off and 0.6 m off at step 30 of each play: it fails there, is reset and
    # replays; env 1 (motion 0, 120 steps) is 0.1 m off throughout and succeeds.
    summary = scripted_eval([2, 0], lambda env, play, step: 0.6 if env == 0 and step == 30 else 0.1)
    assert summary["success_rate"] == summary["phc/success_rate"] == 0.5
    # ours: env 0 counts its 30 frames up to the failure, env 1 its 120
    assert summary["mpjpe_g"] == pytest.approx((29 * 100 + 600 + 120 * 100) / 150, rel=1e-5)
    # PHC: the chunk plays until env 1's num_steps (121) is reached; env 0 counts min(180, 121) = 121 recorded
    # frames: it fails at steps 29, 59, 89, 119 (every 30th frame of its replays), 100 mm elsewhere
    assert summary["phc/mpjpe_g"] == pytest.approx((4 * 600 + 117 * 100 + 120 * 100) / 241, rel=1e-5)
    # velocity error: ours sees the jump into the failure frame once; PHC sees both jumps of each of the 4
    # failures (in and out, the reset included) over env 0's 120 velocity frames
    assert summary["vel_dist"] == pytest.approx(500 / (29 + 119), rel=1e-5)
    assert summary["phc/vel_dist"] == pytest.approx(8 * 500 / (120 + 119), rel=1e-5)
    # the successful motion is counted the same way in both
    for name in ERROR_NAMES:
        assert summary[f"{name}_succ"] == pytest.approx(summary[f"phc/{name}_succ"], abs=1e-3), name
    assert summary["mpjpe_g_succ"] == pytest.approx(100.0, rel=1e-5)


def test_a_failure_on_the_last_frame_is_a_failure_in_both_conventions() -> None:
    # env 0 (motion 0, 120 steps) fails at its last step; PHC counts terminations at curr_stpes <= num_steps - 1
    summary = scripted_eval([0, 2], lambda env, play, step: 0.6 if env == 0 and step == 120 else 0.1)
    assert summary["success_rate"] == summary["phc/success_rate"] == 0.5
    expected = (119 * 100 + 600 + 180 * 100) / 300  # both count env 0's 120 frames and env 1's 180
    assert summary["mpjpe_g"] == pytest.approx(expected, rel=1e-5)
    assert summary["phc/mpjpe_g"] == pytest.approx(expected, rel=1e-5)


def test_a_failure_after_the_last_frame_counts_in_neither() -> None:
    # env 0 ends motion 0 cleanly, then fails at step 2 of its replay (the chunk still plays for env 1's 180 steps)
    summary = scripted_eval([0, 2], lambda env, play, step: 0.6 if env == 0 and play == 1 and step == 2 else 0.1)
    assert summary["success_rate"] == summary["phc/success_rate"] == 1.0
    assert summary["mpjpe_g"] == pytest.approx(100.0, rel=1e-5)
    assert summary["phc/mpjpe_g"] == pytest.approx(100.0, rel=1e-5)


@pytest.mark.parametrize("metres", [1.0, 3.5])
def test_hand_and_toe_errors_count_in_both_24_body_means_and_never_fail(metres: float) -> None:
    # hands and toes are outside the 20 failure bodies (PHC's _eval_bodies) but inside every error's body mean
    summary = scripted_eval([0, 2], lambda env, play, step: metres, bodies=HANDS_TOES)
    assert summary["success_rate"] == summary["phc/success_rate"] == 1.0
    for key in ("mpjpe_g", "mpjpe_l", "phc/mpjpe_g", "phc/mpjpe_l"):
        assert summary[key] == pytest.approx(4 * metres * 1000 / 24, rel=1e-5), key


def test_the_chunk_stops_with_the_last_alive_motion_or_the_last_failure() -> None:
    from phc_lightning.evaluation.phc_convention import PHCChunk, phc_num_steps

    num_steps = torch.tensor([50, 100, 80])
    chunk = PHCChunk(num_steps, torch.tensor([True, True, False]))  # env 2 is a spare
    counted = [chunk.record(k, torch.tensor([k == 9, k == 69, True])) for k in range(70)]
    assert not chunk.running  # env 0 failed at step 9, env 1 at 69: nobody alive, the chunk stops there
    assert [int(c[0]) for c in counted].count(1) == 49 and [int(c[1]) for c in counted].count(1) == 70
    assert not any(bool(c[2]) for c in counted)
    assert chunk.failed.tolist() == [True, True, False]
    alive = PHCChunk(num_steps, torch.tensor([True, True, True]))
    steps = 0
    while alive.running:
        alive.record(steps, torch.tensor([steps == 3, False, False]))
        steps += 1
    assert steps == 100  # env 1 alive: PHC records until curr_stpes reaches its num_steps
    assert phc_num_steps(torch.tensor([121, 120]), torch.tensor([30.0, 60.0]), 1.0 / 30.0).tolist() == [121, 60]


# ---------------------------------------------------------------- real physics against a port of PHC's player


def phc_player(steps: List[Tuple[np.ndarray, np.ndarray, np.ndarray]], num_steps: np.ndarray, num_real: int):
    """A port of PHC's ``IMAMPPlayerContinuous._post_step`` (``flags.im_eval``) over one chunk of envs.

    ``steps``: per env step, ``(body_pos [N, 24, 3], body_pos_gt [N, 24, 3], terminate [N])``. Envs from
    ``num_real`` on are spares (PHC's ``bound`` when the chunk holds the last motion). Returns the real envs'
    ``terminate_state`` and their recorded ``pred`` / ``gt`` frames ``[: num_steps - 1]``.
    """
    n = len(num_steps)
    terminate_state = np.zeros(n, dtype=bool)
    pred, gt, curr_stpes = [], [], 0
    for body_pos, body_pos_gt, terminate in steps:
        termination_state = (curr_stpes <= num_steps - 1) & terminate
        terminate_state = termination_state | terminate_state
        if (~terminate_state).sum() > 0:
            if num_real < n:
                bound = num_real
                if (~terminate_state[:bound]).sum() > 0:
                    curr_max = num_steps[:bound][~terminate_state[:bound]].max()
                else:
                    curr_max = curr_stpes - 1
            else:
                curr_max = num_steps[~terminate_state].max()
            if curr_stpes >= curr_max:
                curr_max = curr_stpes + 1
        else:
            curr_max = num_steps.max()
        pred.append(body_pos)
        gt.append(body_pos_gt)
        curr_stpes += 1
        if curr_stpes >= curr_max or terminate_state.sum() == n:
            break
    else:  # our play stopped first: fine only if PHC would have recorded no frame that it keeps
        assert (num_steps[:num_real] - 1 <= len(steps)).all(), "the play stopped before PHC's chunk did"
    pred_all, gt_all = np.stack(pred), np.stack(gt)
    pred_list = [pred_all[: (i - 1), idx] for idx, i in enumerate(num_steps)][:num_real]
    gt_list = [gt_all[: (i - 1), idx] for idx, i in enumerate(num_steps)][:num_real]
    return terminate_state[:num_real], pred_list, gt_list


def test_phc_figures_equal_a_port_of_phcs_player_on_real_physics() -> None:
    num_envs = 3  # 7 motions: chunks of 3, 3 and 1 (+ 2 spare envs)
    env = HumanoidTracking(make_backend("mujoco", num_envs, num_threads=1), MOTIONS)
    env.set_eval(True)
    policy = module()
    recorded: List[Tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    real_step = env.step

    def recording_step(pd_targets: torch.Tensor):
        result = real_step(pd_targets)
        recorded.append((result.info["body_pos"].double().numpy(), result.info["ref_body_pos"].double().numpy(),
                         result.terminated.numpy().copy()))
        return result

    env.step = recording_step
    policy.on_validation_epoch_start()
    failed, preds, gts, more_frames_than_ours = [], [], [], False
    for chunk in torch.arange(MOTIONS.num_motions).split(num_envs):
        recorded.clear()
        with torch.no_grad():
            batch = play_motions(env, policy, chunk, zero_actions=True)  # residual zero actions: some fail
        policy.validation_step(batch)
        fill = chunk[torch.arange(num_envs) % chunk.numel()]
        num_steps = MOTIONS.num_frames[fill].numpy()  # 30 fps at 30 Hz
        terminated, pred, gt = phc_player(recorded, num_steps, chunk.numel())
        failed += terminated.tolist()
        preds += pred
        gts += gt
        for i in range(chunk.numel()):
            assert int(batch["phc/frames/mpjpe_g"][i]) == len(pred[i])
            more_frames_than_ours |= int(batch["phc/frames/mpjpe_g"][i]) > int(batch["frames/mpjpe_g"][i])
    summary, _ = policy.eval_results()
    assert 0 < sum(failed) < len(failed) and more_frames_than_ours  # a mix, and a failed motion's replay counted
    assert summary["phc/success_rate"] == pytest.approx(1 - np.mean(failed))
    # smpl_sim compute_metrics_lite on the concatenated frames, np.mean over frames (and bodies)
    per_motion = [numpy_frame_errors(p, g) for p, g in zip(preds, gts)]
    for name in ERROR_NAMES:
        every = np.concatenate([e[name] for e in per_motion]).mean()
        succ = np.concatenate([e[name] for e, f in zip(per_motion, failed) if not f]).mean()
        assert summary[f"phc/{name}"] == pytest.approx(every, rel=1e-4), name
        assert summary[f"phc/{name}_succ"] == pytest.approx(succ, rel=1e-4), name
    env.close()
