"""Every shipped config parses against the real signatures (so configs can never rot)."""

from pathlib import Path

import pytest

from phc_lightning.run.lightning_cli import run_cli
from phc_lightning.task.observations import OBS_DIM, TASK_OBS_DIM
from tests.helpers import CONFIGS

CONFIG_FILES = sorted(CONFIGS.glob("*.yaml"))


@pytest.mark.parametrize("config", CONFIG_FILES, ids=lambda p: p.name)
def test_config_parses_and_links_env_sizes(config: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    # Instantiate only what is cheap: parse the config and check the linked/declared values.
    args = ["--config", str(config), "--model.actor_hidden", "[8]", "--model.critic_hidden", "[8]"]
    cli = run_cli(args + ["--trainer.accelerator", "cpu"], run=False)  # the GPU config parses on CPU too
    # the model's input is linked to the task's observation: 934 features plus 576 per extra reference frame
    extra_frames = len(cli.datamodule.task.future_steps) - 1
    assert cli.model.hparams.obs_dim == cli.datamodule.obs_dim == OBS_DIM + TASK_OBS_DIM * extra_frames
    assert cli.model.action_dim == 57  # controlled hinges: hands and toes are frozen
    assert cli.datamodule.hparams.num_envs >= 1
    callback_names = {type(cb).__name__ for cb in cli.trainer.callbacks}
    assert {"PHCCheckpoint", "EvalStats", "MotionResampling", "LRAnnealing"} <= callback_names


def test_gpu_config_is_puffer_phc_scale() -> None:
    import yaml

    cfg = yaml.safe_load((CONFIGS / "phc_gpu.yaml").read_text())
    assert cfg["data"]["num_envs"] == 4096
    assert cfg["data"]["horizon"] * cfg["data"]["num_envs"] // cfg["data"]["num_minibatches"] == 32768
    assert cfg["model"]["actor_hidden"] == [2048, 1536, 1024, 1024, 512, 512]


def test_the_config_reference_lists_every_key_of_the_model_data_task_amp_and_callbacks() -> None:
    import dataclasses
    import inspect

    import callbacks
    from phc_lightning.amp.config import AMPConfig
    from phc_lightning.learner.module import PHCModule
    from phc_lightning.rollout.datamodule import PHCDataModule
    from phc_lightning.task.config import TaskConfig

    def arguments(cls: type) -> list:
        return [name for name in inspect.signature(cls.__init__).parameters if name not in ("self", "kwargs")]

    reference = (CONFIGS.parent / "docs" / "config.md").read_text()
    keys = [f"model.{k}" for k in arguments(PHCModule) if k != "obs_dim"]
    keys += [f"model.amp.{f.name}" for f in dataclasses.fields(AMPConfig)]
    keys += [f"data.{k}" for k in arguments(PHCDataModule) if k != "amp"]
    keys += [f"data.task.{f.name}" for f in dataclasses.fields(TaskConfig)]
    keys += [f"`{k}`" for name in callbacks.__all__ for k in arguments(getattr(callbacks, name))]
    assert [key for key in keys if (key if key.startswith("`") else f"`{key}`") not in reference] == []


def test_a_look_ahead_grows_the_observation_the_model_is_built_for(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    cli = run_cli(["--config", str(CONFIGS / "smoke.yaml"), "--data.task.future_steps", "[1, 5]",
                   "--model.mirror_augment", "true"], run=False)
    assert cli.datamodule.obs_dim == cli.model.hparams.obs_dim == 934 + 576
    assert cli.model.mirror.obs_index.numel() == 934 + 576
