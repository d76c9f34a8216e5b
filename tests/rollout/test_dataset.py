"""RolloutDataset with the real MuJoCo env: minibatch coverage, bootstrapping, step accounting."""

from __future__ import annotations

import importlib.util
from typing import List, Tuple

import pytest
import torch

from phc_lightning.bench.host_reads import HostReads
from phc_lightning.learner.module import PHCModule
from phc_lightning.motion.library import MotionLibrary
from phc_lightning.rollout.dataset import ITERATION_KEY, RolloutDataset
from phc_lightning.sim.factory import make_backend
from phc_lightning.task.config import TaskConfig
from phc_lightning.task.env import HumanoidTracking

NUM_ENVS = 4
HORIZON = 12


def make_dataset(**kwargs) -> Tuple[RolloutDataset, PHCModule]:
    from phc_lightning.motion import BUNDLED_MOTIONS

    env = HumanoidTracking(make_backend("mujoco", NUM_ENVS, num_threads=1), MotionLibrary(BUNDLED_MOTIONS), seed=3)
    module = PHCModule(actor_hidden=[16], critic_hidden=[16])
    args = dict(horizon=HORIZON, update_epochs=2, num_minibatches=3, gamma=0.9, gae_lambda=0.8)
    args.update(kwargs)
    return RolloutDataset(env, get_policy=lambda: module, **args), module


def run_iteration(dataset: RolloutDataset) -> Tuple[List[dict], dict]:
    """One pass; returns the minibatches and the iteration summary the first one carried."""
    batches = list(iter(dataset))
    return batches, batches[0].pop(ITERATION_KEY)


def test_every_transition_is_visited_once_per_update_epoch() -> None:
    dataset, _ = make_dataset()
    batches, _ = run_iteration(dataset)
    assert len(batches) == len(dataset) == 2 * 3
    per_epoch = HORIZON * NUM_ENVS
    for epoch in range(2):
        rows = torch.cat([b["obs"] for b in batches[epoch * 3 : (epoch + 1) * 3]])
        assert rows.shape[0] == per_epoch
        # each transition appears exactly once: the sorted rows are pairwise distinct
        assert torch.unique(rows, dim=0).shape[0] == per_epoch
    assert all(set(b) == {"obs", "actions", "logprobs", "values", "advantages", "returns"} for b in batches)
    dataset.env.close()


def test_collection_happens_at_the_first_fetch_not_when_the_iterator_is_created() -> None:
    dataset, _ = make_dataset()
    calls = []
    real_collect = dataset.collect
    dataset.collect = lambda policy: calls.append(1) or real_collect(policy)
    iterator = iter(dataset)  # what Lightning does while setting up the epoch's data fetcher
    assert calls == []
    next(iterator)  # the epoch loop's first fetch, after on_train_epoch_start
    assert calls == [1]
    dataset.env.close()


def test_the_summary_counts_steps_and_hands_over_total_timesteps() -> None:
    dataset, module = make_dataset(total_timesteps=2 * HORIZON * NUM_ENVS)
    _, first = run_iteration(dataset)
    assert first["env_steps"] == HORIZON * NUM_ENVS and first["total_timesteps"] == 2 * HORIZON * NUM_ENVS
    _, second = run_iteration(dataset)
    assert second["env_steps"] == HORIZON * NUM_ENVS
    assert second["stats"]["perf/collect_time"] > 0
    assert any(key.startswith("rewards/") for key in second["stats"])
    assert int(module.env_steps) == 0  # collection never writes into the module
    assert "env_steps" not in dataset.state_dict()  # the learner's counter is the only one
    dataset.env.close()


def test_training_stops_at_total_timesteps_by_the_modules_count_also_after_a_resume(tmp_path) -> None:
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from phc_lightning.rollout.datamodule import PHCDataModule

    steps = 4 * 4

    def fit(max_epochs: int, run: str, ckpt_path=None):  # noqa: ANN001, ANN202
        dm = PHCDataModule(num_envs=4, num_threads=1, horizon=4, update_epochs=1, num_minibatches=1,
                           total_timesteps=3 * steps)
        module = PHCModule(actor_hidden=[16], critic_hidden=[16])
        trainer = L.Trainer(max_epochs=max_epochs, logger=False, enable_progress_bar=False, limit_val_batches=0,
                            enable_model_summary=False, default_root_dir=str(tmp_path),
                            callbacks=[ModelCheckpoint(dirpath=str(tmp_path / run), save_last=True)])
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
        return trainer, module

    trainer, module = fit(10, "straight")
    assert trainer.current_epoch == 3 and int(module.env_steps) == 3 * steps  # not max_epochs: the budget
    fit(2, "two")
    last = torch.load(tmp_path / "two" / "last.ckpt", weights_only=True)
    assert int(last["state_dict"]["env_steps"]) == 2 * steps
    assert "env_steps" not in last["PHCDataModule"]["rollout"]
    trainer, module = fit(10, "resumed", ckpt_path=str(tmp_path / "two" / "last.ckpt"))
    assert trainer.current_epoch == 3 and int(module.env_steps) == 3 * steps


def test_the_summary_carries_the_observations_for_the_normalizer_and_collection_leaves_it_alone() -> None:
    dataset, module = make_dataset()
    _, first = run_iteration(dataset)
    # the buffer's rows, each once (the reset observations the envs started from are its first row)
    assert first["obs"].shape[0] == HORIZON * NUM_ENVS
    assert first["returns"].shape[0] == HORIZON * NUM_ENVS
    _, second = run_iteration(dataset)
    assert second["obs"].shape[0] == HORIZON * NUM_ENVS
    assert int(module.obs_norm.count) == 0  # only the learner merges statistics, after its update
    dataset.env.close()


def test_action_noise_has_its_own_stream_and_resumes_from_the_state() -> None:
    dataset, _ = make_dataset()
    run_iteration(dataset)
    saved_env, saved = dataset.env.state_dict(), dataset.state_dict()
    global_rng = torch.get_rng_state()
    again, _ = run_iteration(dataset)
    assert torch.equal(torch.get_rng_state(), global_rng)  # the global RNG is not drawn from
    dataset.env.load_state_dict(saved_env)
    dataset.load_state_dict(saved)
    replay, _ = run_iteration(dataset)
    for a, b in zip(again, replay):
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    dataset.env.close()


def test_truncations_bootstrap_from_the_final_observation_and_terminations_cut() -> None:
    from phc_lightning.motion import BUNDLED_MOTIONS
    from phc_lightning.motion.formats import load_motion_file
    from phc_lightning.motion.raw_motion import RawMotion

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
    from tests.task.test_env import inject_nan_qvel

    monkeypatch.chdir(tmp_path)  # MuJoCo appends its instability warning to ./MUJOCO_LOG.TXT
    dataset, module = make_dataset()
    env = dataset.env
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


@pytest.mark.parametrize("mlp_dtype", ["float32", "bfloat16"])
def test_first_minibatch_of_every_iteration_has_zero_kl_with_the_real_trainer(tmp_path, mlp_dtype: str) -> None:
    import lightning as L

    from phc_lightning.rollout.datamodule import PHCDataModule

    kls = []

    class RecordKL(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            kls.append((trainer.current_epoch, batch_idx, pl_module.last_approx_kl))

    dm = PHCDataModule(num_envs=8, num_threads=1, horizon=8, update_epochs=2, num_minibatches=2)
    module = PHCModule(actor_hidden=[32], critic_hidden=[32], residual_actions=True, action_scale=0.5,
                       learning_rate=1e-3, mlp_dtype=mlp_dtype)
    trainer = L.Trainer(max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, callbacks=[RecordKL()],
                        default_root_dir=str(tmp_path))
    trainer.fit(module, datamodule=dm)
    firsts = [kl for epoch, idx, kl in kls if idx == 0]
    later = [kl for epoch, idx, kl in kls if idx > 0]
    assert len(firsts) == 3 and all(kl == 0.0 for kl in firsts)  # stored log-probs are the training policy's
    assert all(kl > 0.0 for kl in later)


HAS_WARP = importlib.util.find_spec("mujoco_warp") is not None
BACKENDS = ["mujoco", pytest.param("mujoco_warp", marks=pytest.mark.skipif(not HAS_WARP, reason="needs [warp]"))]


def counted_collection(backend: str, horizon: int, amp_lstm: bool) -> HostReads:
    """The host reads of one whole collection (policy, env steps, resets, statistics, bootstrapping) of 4 envs on
    10-frame clips, after a warm-up collection (Warp captures its graphs on first use)."""
    from phc_lightning.amp.collection import AMPCollector
    from phc_lightning.amp.config import AMPConfig
    from phc_lightning.amp.observations import amp_step_features
    from phc_lightning.motion import BUNDLED_MOTIONS
    from phc_lightning.motion.formats import load_motion_file
    from phc_lightning.motion.raw_motion import RawMotion

    clips = [RawMotion(m.key, m.fps, m.root_pos[:10], m.global_rot[:10]) for m in load_motion_file(BUNDLED_MOTIONS)]
    sim = make_backend(backend, NUM_ENVS, num_threads=1) if backend == "mujoco" else make_backend(
        backend, NUM_ENVS, device="cpu")
    motions = MotionLibrary(clips)
    # the AMP + LSTM variant also draws start times by failures (adaptive_start), recorded every step
    env = HumanoidTracking(sim, motions, TaskConfig(adaptive_start=amp_lstm), seed=3,
                           state_features=amp_step_features if amp_lstm else None)
    amp = AMPConfig(enabled=True, history=2, disc_hidden=(8,), replay_size=16) if amp_lstm else AMPConfig()
    module = PHCModule(actor_hidden=[16], critic_hidden=[16], recurrent="both" if amp_lstm else None, lstm_hidden=8,
                       amp=amp)
    collector = AMPCollector(amp, motions, env.control_dt, horizon * NUM_ENVS, seed=4) if amp_lstm else None
    dataset = RolloutDataset(env, lambda: module, horizon=horizon, update_epochs=1, num_minibatches=1, gamma=0.9,
                             gae_lambda=0.8, amp=collector)
    dataset.collect(module)
    with HostReads() as reads:
        dataset.collect(module)
    stats = dataset.stats
    # every env reaches its clip's end (0.3 s) within the horizon, some fail first: resets happen at many steps
    assert stats.num_truncated + stats.num_terminated >= NUM_ENVS and len(stats.episode_returns) >= NUM_ENVS
    env.close()
    return reads


@pytest.mark.parametrize("amp_lstm", [False, True], ids=["mlp", "amp_lstm"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_collection_with_env_steps_and_resets_reads_the_device_a_constant_number_of_times(backend: str,
                                                                                         amp_lstm: bool) -> None:
    """On a GPU every host read of a device value (``item``, ``bool``, ``.tolist()``, ``nonzero``, a boolean-mask
    index, a list copied to the device, ...) waits for the queued kernels. A whole collection, the env's steps and
    resets included, reads a fixed handful of times per iteration, none per step: doubling the horizon adds none.

    The CPU MuJoCo backend reads PD targets and reset masks on the host by nature (MuJoCo C runs there): calls made
    by ``sim/mujoco_cpu.py`` itself are its numpy exchange, kept apart (:mod:`tests.host_reads`). The Warp backend
    has none."""
    short, long = (counted_collection(backend, horizon, amp_lstm) for horizon in (6, 12))
    print(f"\n{backend} {'amp+lstm' if amp_lstm else 'mlp'}: {len(long.reads)} host reads per iteration "
          f"(horizon 6 and 12), the CPU backend's own numpy exchange {len(short.exchange)} / {len(long.exchange)}")
    for where, count in sorted(long.summary().items()):
        print(f"  {count}  {where}")
    assert short.summary() == long.summary()  # nothing per step
    # statistics (returns of ended episodes + one copy), truncations (where + how many), Warp's overflow check
    assert len(long.reads) <= 5, long.reads
    if backend == "mujoco_warp":
        assert long.exchange == []
