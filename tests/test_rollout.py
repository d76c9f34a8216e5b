"""RolloutDataset with the real MuJoCo env: minibatch coverage, bootstrapping, step accounting."""

from __future__ import annotations

from typing import List

import torch

from phc_lightning.module import PHCModule
from phc_lightning.motion.library import MotionLibrary
from phc_lightning.rollout import RolloutDataset
from phc_lightning.sim.factory import make_backend
from phc_lightning.task.env import HumanoidTracking

NUM_ENVS = 4
HORIZON = 12


def make_dataset(**kwargs) -> RolloutDataset:
    from phc_lightning.motion import BUNDLED_MOTIONS

    env = HumanoidTracking(make_backend("mujoco", NUM_ENVS, num_threads=1), MotionLibrary(BUNDLED_MOTIONS), seed=3)
    module = PHCModule(actor_hidden=[16], critic_hidden=[16])
    args = dict(horizon=HORIZON, update_epochs=2, num_minibatches=3, gamma=0.9, gae_lambda=0.8)
    args.update(kwargs)
    return RolloutDataset(env, get_module=lambda: module, **args)


def run_iteration(dataset: RolloutDataset) -> List[dict]:
    """Consume one pass the way Lightning does: every yielded minibatch is 'trained' afterwards."""
    module = dataset.get_module()
    batches = list(iter(dataset))  # the generator runs ahead, as with Lightning's prefetching
    for _ in batches:
        dataset.minibatch_trained(module)
    return batches


def test_every_transition_is_visited_once_per_update_epoch() -> None:
    dataset = make_dataset()
    batches = run_iteration(dataset)
    assert len(batches) == 2 * 3
    per_epoch = HORIZON * NUM_ENVS
    for epoch in range(2):
        rows = torch.cat([b["obs"] for b in batches[epoch * 3 : (epoch + 1) * 3]])
        assert rows.shape[0] == per_epoch
        # each transition appears exactly once: the sorted rows are pairwise distinct
        assert torch.unique(rows, dim=0).shape[0] == per_epoch
    assert set(batches[0]) == {"obs", "actions", "logprobs", "values", "advantages", "returns"}
    dataset.env.close()


def test_env_steps_are_counted_and_total_timesteps_stops_training() -> None:
    stopped = []
    dataset = make_dataset(total_timesteps=2 * HORIZON * NUM_ENVS, stop_training=lambda: stopped.append(True))
    module = dataset.get_module()
    run_iteration(dataset)
    assert int(module.env_steps) == HORIZON * NUM_ENVS and not stopped
    run_iteration(dataset)
    assert int(module.env_steps) == 2 * HORIZON * NUM_ENVS and stopped == [True]
    stats = dataset.stats.as_log_dict()
    assert stats["charts/SPS"] > 0 and 0 < stats["perf/collect_fraction"] < 1
    assert any(key.startswith("rewards/") for key in stats)
    dataset.env.close()


def test_normalizer_moves_only_after_the_last_minibatch_is_trained() -> None:
    dataset = make_dataset()
    module = dataset.get_module()
    batches = list(iter(dataset))
    count_before = int(module.obs_norm.count)  # includes the first reset's warm-up statistics
    for _ in batches[:-1]:
        dataset.minibatch_trained(module)
    assert int(module.obs_norm.count) == count_before
    dataset.minibatch_trained(module)
    assert int(module.obs_norm.count) == count_before + HORIZON * NUM_ENVS
    dataset.env.close()


def test_truncations_bootstrap_from_the_final_observation_and_terminations_cut() -> None:
    from phc_lightning.motion import BUNDLED_MOTIONS
    from phc_lightning.motion.formats import RawMotion, load_motion_file

    # 8-frame clips (0.23 s): every env reaches its motion's end inside the horizon
    short = [RawMotion(m.key, m.fps, m.root_pos[:8], m.global_rot[:8]) for m in load_motion_file(BUNDLED_MOTIONS)]
    env = HumanoidTracking(make_backend("mujoco", NUM_ENVS, num_threads=1), MotionLibrary(short), seed=1)
    module = PHCModule(actor_hidden=[16], critic_hidden=[16])
    dataset = RolloutDataset(env, lambda: module, horizon=HORIZON, update_epochs=1, num_minibatches=1,
                             gamma=0.9, gae_lambda=0.8)
    finals = []
    real_step = env.step

    def recording_step(actions: torch.Tensor):
        result = real_step(actions)
        finals.append(result.final_obs.clone())
        return result

    env.step = recording_step
    with torch.no_grad():
        buf = dataset.collect(module)
    assert buf.truncated.any(), "expected motion ends inside the horizon"
    for t in range(HORIZON):
        for i in range(NUM_ENVS):
            if buf.terminated[t, i]:
                assert buf.next_values[t, i] == 0
            elif buf.truncated[t, i]:
                expected = module.get_value(finals[t][i : i + 1])[0]
                torch.testing.assert_close(buf.next_values[t, i], expected)
            elif t + 1 < HORIZON:
                torch.testing.assert_close(buf.next_values[t, i], buf.values[t + 1, i])
    env.close()


def test_an_env_the_backend_had_to_reset_bootstraps_from_its_last_sane_value(tmp_path, monkeypatch) -> None:
    from tests.test_task_env import inject_nan_qvel

    monkeypatch.chdir(tmp_path)  # MuJoCo appends its instability warning to ./MUJOCO_LOG.TXT
    dataset = make_dataset()
    env, module = dataset.env, dataset.get_module()
    real_step = env.step
    calls = []

    def step_with_explosion(targets: torch.Tensor):
        calls.append(1)
        if len(calls) == 5:
            inject_nan_qvel(env.backend, env_id=1)
        return real_step(targets)

    env.step = step_with_explosion
    with torch.no_grad():
        buf = dataset.collect(module)
    assert buf.truncated[4, 1] and not buf.terminated[4, 1]
    assert buf.next_values[4, 1] == buf.values[4, 1]  # V(s_t), not V of the exploded state
    assert dataset.stats.num_unstable == 1
    assert dataset.stats.as_log_dict()["charts/unstable_envs"] == 1.0
    env.close()


def test_first_minibatch_of_every_iteration_has_zero_kl_with_the_real_trainer(tmp_path) -> None:
    import lightning as L

    from phc_lightning.data import PHCDataModule

    kls = []

    class RecordKL(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            kls.append((trainer.current_epoch, batch_idx, pl_module.last_approx_kl))

    dm = PHCDataModule(num_envs=8, num_threads=1, horizon=8, update_epochs=2, num_minibatches=2)
    module = PHCModule(actor_hidden=[32], critic_hidden=[32], residual_actions=True, action_scale=0.5,
                       learning_rate=1e-3)
    trainer = L.Trainer(max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, callbacks=[RecordKL()],
                        default_root_dir=str(tmp_path))
    trainer.fit(module, datamodule=dm)
    firsts = [kl for epoch, idx, kl in kls if idx == 0]
    later = [kl for epoch, idx, kl in kls if idx > 0]
    assert len(firsts) == 3 and all(kl == 0.0 for kl in firsts)  # stored log-probs are the training policy's
    assert all(kl > 0.0 for kl in later)
