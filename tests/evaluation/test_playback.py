"""Evaluation of a motion set streamed chunk by chunk equals evaluating it held whole."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from phc_lightning.evaluation.playback import EvalDataset
from phc_lightning.learner.module import PHCModule
from phc_lightning.motion import BUNDLED_MOTIONS
from phc_lightning.motion.library import MotionLibrary
from phc_lightning.sim.factory import make_backend
from phc_lightning.task.env import HumanoidTracking


def evaluate(module: PHCModule, env: HumanoidTracking, motions=None):
    module.on_validation_epoch_start()
    for chunk in EvalDataset(env, lambda: module, motions=motions):
        module.validation_step(chunk)
    return module.eval_results()


def test_an_index_only_library_is_played_chunk_by_chunk_with_the_same_results() -> None:
    torch.manual_seed(0)
    module = PHCModule(residual_actions=True, action_scale=0.5, dof_action_scale={}, actor_hidden=[32],
                       critic_hidden=[32]).eval()
    full = MotionLibrary(BUNDLED_MOTIONS)
    index = MotionLibrary(BUNDLED_MOTIONS, index_only=True)
    assert index.total_frames == full.total_frames and index.resident_frames == index.memory_bytes()["frames"] == 0
    num_envs = 3  # 7 motions: chunks of 3, 3 and 1
    whole_env = HumanoidTracking(make_backend("mujoco", num_envs, num_threads=1), full)
    streamed_env = HumanoidTracking(make_backend("mujoco", num_envs, num_threads=1), index.subset([0, 1, 2]))
    with torch.no_grad():
        whole_summary, whole_rows = evaluate(module, whole_env)
        streamed_summary, streamed_rows = evaluate(module, streamed_env, motions=index)
    assert [r["motion_id"] for r in streamed_rows] == list(range(7))
    # the same episodes; errors equal up to float rounding (a chunk's library is built from fewer frames at once)
    for streamed, whole in zip(streamed_rows, whole_rows):
        assert (streamed["steps_played"], streamed["success"]) == (whole["steps_played"], whole["success"])
        for key in ("mpjpe_g", "mpjpe_l", "mpjpe_pa"):
            assert abs(streamed[key] - whole[key]) < 1e-4, (key, streamed, whole)
    for key, value in whole_summary.items():
        torch.testing.assert_close(torch.tensor(streamed_summary[key]), torch.tensor(value), rtol=1e-5, atol=1e-4,
                                   equal_nan=True)
    whole_env.close()
    streamed_env.close()


@pytest.mark.parametrize("recurrent", [None, "both"])
def test_the_deterministic_evaluation_never_runs_the_critic_and_plays_act_steps_means(recurrent) -> None:
    from phc_lightning.evaluation.playback import play_motions
    from phc_lightning.motion.formats import load_motion_file
    from phc_lightning.motion.raw_motion import RawMotion

    torch.manual_seed(0)
    clips = [RawMotion(m.key, m.fps, m.root_pos[:10], m.global_rot[:10]) for m in load_motion_file(BUNDLED_MOTIONS)]
    module = PHCModule(actor_hidden=[16], critic_hidden=[16], recurrent=recurrent, lstm_hidden=8).eval()
    env = HumanoidTracking(make_backend("mujoco", 2, num_threads=1), MotionLibrary(clips[:2]))
    env.set_eval(True)
    critic_calls = []
    for part in (module.policy.critic, getattr(module.policy, "critic_memory", None)):
        if part is not None:
            part.register_forward_hook(lambda *args: critic_calls.append(1))
    actions = []
    real_step = env.step
    env.step = lambda targets: actions.append(targets.clone()) or real_step(targets)
    out = play_motions(env, module, torch.arange(2))
    assert int(out["lengths"].max()) > 1 and critic_calls == []
    # the actions played are act_step's deterministic means (which also runs the critic), step for step
    env.step = real_step
    obs = env.assign_motions(torch.arange(2))
    state = torch.zeros(2, module.recurrent_state_size)
    with torch.no_grad():  # as the evaluation (the LSTM kernels round differently with grad)
        for played in actions[:3]:
            mean, _, _, state = module.act_step(obs, state, deterministic=True)
            assert torch.equal(module.pd_targets(mean, env.ref_next_dof_pos), played)
            obs = real_step(played).obs
    env.close()


@pytest.mark.parametrize("backend", ["mujoco", pytest.param("mujoco_warp", marks=pytest.mark.skipif(
    importlib.util.find_spec("mujoco_warp") is None, reason="needs [warp]"))])
def test_an_evaluation_reads_the_device_per_chunk_and_every_few_steps_never_in_a_step(backend: str) -> None:
    """Steps of an evaluation read nothing on the host; whether the chunk still plays is read every
    STOP_CHECK_STEPS steps, and a chunk's set-up and end read a few values once."""
    from phc_lightning.bench.host_reads import HostReads
    from phc_lightning.evaluation.playback import STOP_CHECK_STEPS, play_motions

    module = PHCModule(actor_hidden=[16], critic_hidden=[16]).eval()
    sim = make_backend(backend, 4, num_threads=1) if backend == "mujoco" else make_backend(backend, 4, device="cpu")
    env = HumanoidTracking(sim, MotionLibrary(BUNDLED_MOTIONS))
    env.set_eval(True)
    play_motions(env, module, torch.arange(4))  # warm-up: Warp captures its graphs on first use
    reads, per_step, real_step = HostReads(), [], env.step

    def counted_step(targets: torch.Tensor):  # noqa: ANN202
        before = len(reads.reads)
        result = real_step(targets)
        per_step.append(len(reads.reads) - before)
        return result

    env.step = counted_step
    with reads:
        result = play_motions(env, module, torch.arange(4))
    stop_checks = [r for r in reads.reads if r[1].startswith("phc_lightning/evaluation/playback.py")
                   and r[0] == "__bool__"]
    others = [r for r in reads.reads if r not in stop_checks]
    played = int(result["lengths"].max())
    assert len(per_step) >= played and sum(per_step) == 0  # (steps past the chunk's end round up to a check)
    assert 1 <= len(stop_checks) <= len(per_step) // STOP_CHECK_STEPS + 1, stop_checks
    assert len(others) <= 8, others  # assigning the chunk's motions, its length, the physics' deferred errors
    env.close()
