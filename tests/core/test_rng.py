"""Random streams live on the device of the tensors they draw for (REVIEW 1: MotionResampling drew with a CPU
generator for a library on CUDA, which crashes at the first resample of configs/phc_gpu.yaml).

This torch has no GPU, and no other device type can hold a generator here (``torch.Generator("meta")`` is refused,
CUDA/XPU/MPS are not built, a Python PrivateUse1 backend has no ``getNewGenerator``), so a CUDA-only crash cannot be
replayed on this machine. What is checked instead: every draw of the package goes through ``core/rng.py``, whose
check compares the generator's device with the draw's (torch itself checks that only on accelerators), the check
refuses a mismatch on the CPU, and a real training run with every sampler switched on draws each time with a
generator on the device of the tensors it draws for.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from typing import List, Tuple

import lightning as L
import pytest
import torch
from torch.overrides import TorchFunctionMode

from phc_lightning.core import rng
from tests.helpers import ROOT

DRAWS = {"rand", "randn", "randint", "randperm", "multinomial", "normal", "bernoulli", "poisson", "rand_like",
         "randn_like", "randint_like"}
IN_PLACE_DRAWS = {"normal_", "uniform_", "bernoulli_", "exponential_", "random_", "geometric_", "cauchy_",
                  "log_normal_"}


def package_files():
    for top in ("phc_lightning", "callbacks"):
        yield from sorted((ROOT / top).rglob("*.py"))


def test_every_random_draw_and_generator_of_the_package_goes_through_core_rng() -> None:
    """One helper per kind of draw checks the device; a direct torch call would skip the check."""
    direct: List[str] = []
    for path in package_files():
        if path == ROOT / "phc_lightning" / "core" / "rng.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            name, owner = node.func.attr, node.func.value
            from_torch = isinstance(owner, ast.Name) and owner.id == "torch"
            # (a torch.distributions sample draws from the global RNG: the run below would see it)
            if (from_torch and (name in DRAWS or name == "Generator")) or name in IN_PLACE_DRAWS:
                direct.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
    assert direct == [], direct


def test_a_generator_on_another_device_is_refused_at_the_draw_also_where_torch_would_not() -> None:
    cpu_generator = torch.Generator().manual_seed(0)
    weights = torch.ones(4, device="meta")  # stands in for a library on a GPU: torch checks nothing here
    torch.multinomial(weights, 2, replacement=True, generator=cpu_generator)  # accepted by torch off-GPU
    with pytest.raises(ValueError, match=r"MotionResampling: its random generator lives on cpu but draws for "
                                         r"tensors on meta"):
        rng.multinomial(weights, 2, cpu_generator, "MotionResampling")
    for draw in (lambda: rng.rand((3,), cpu_generator, "meta", "x"),
                 lambda: rng.randn((3,), cpu_generator, "meta", "x"),
                 lambda: rng.randint(5, (3,), cpu_generator, "meta", "x"),
                 lambda: rng.randperm(3, cpu_generator, "meta", "x")):
        with pytest.raises(ValueError, match="lives on cpu"):
            draw()
    rng.check_generator(None, "meta", "x")  # the device's default generator is always on the device


def test_on_the_cpu_every_helper_draws_what_torch_draws() -> None:
    def both(draw, direct):  # noqa: ANN001, ANN202
        torch.testing.assert_close(draw(rng.new_generator(7, "cpu")), direct(torch.Generator().manual_seed(7)),
                                   rtol=0, atol=0)

    both(lambda g: rng.rand((5,), g, "cpu", "x"), lambda g: torch.rand(5, generator=g))
    both(lambda g: rng.randn((2, 3), g, "cpu", "x"), lambda g: torch.randn(2, 3, generator=g))
    both(lambda g: rng.randint(9, (4,), g, "cpu", "x"), lambda g: torch.randint(0, 9, (4,), generator=g))
    both(lambda g: rng.randperm(10, g, "cpu", "x"), lambda g: torch.randperm(10, generator=g))
    w = torch.tensor([0.1, 0.5, 0.4])
    both(lambda g: rng.multinomial(w, 6, g, "x"), lambda g: torch.multinomial(w, 6, replacement=True, generator=g))


class RecordDraws(TorchFunctionMode):
    """Every random draw: its generator's device, its result's device and the package functions that asked."""

    def __init__(self) -> None:
        super().__init__()
        self.draws: List[Tuple[str, object, torch.device, Tuple[str, ...]]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001 - torch's signature
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        if name in DRAWS:
            callers, frame = [], sys._getframe(1)
            while frame is not None:
                path = frame.f_code.co_filename
                if str(ROOT) in path and "/tests/" not in path and not path.endswith("core/rng.py"):
                    callers.append(f"{Path(path).stem}.{frame.f_code.co_name}")
                frame = frame.f_back
            generator = kwargs.get("generator")
            self.draws.append((name, None if generator is None else generator.device, out.device, tuple(callers)))
        return out


def fit_with_every_sampler(tmp_path, recurrent) -> RecordDraws:  # noqa: ANN001
    """A real 2-iteration fit: start times (uniform + frame-0 share, or adaptive), motion draws, resampling, action
    noise, minibatch or segment shuffles, AMP demos and replay."""
    from callbacks import MotionResampling
    from phc_lightning.amp.config import AMPConfig
    from phc_lightning.learner.module import PHCModule
    from phc_lightning.rollout.datamodule import PHCDataModule
    from phc_lightning.task.config import TaskConfig

    amp = dict(enabled=True, history=2, disc_hidden=[16], replay_size=64, replay_keep_prob=0.5)
    task = TaskConfig(start_init_prob=0.5) if recurrent else TaskConfig(adaptive_start=True)
    dm = PHCDataModule(num_envs=4, num_threads=1, horizon=8, update_epochs=1, num_minibatches=2, task=task,
                       amp=amp, bptt_horizon=4 if recurrent else None, seed=1)
    module = PHCModule(actor_hidden=[16], critic_hidden=[16], recurrent=recurrent, lstm_hidden=8,
                       amp=AMPConfig(**{**amp, "disc_hidden": (16,)}))
    trainer = L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, default_root_dir=str(tmp_path),
                        callbacks=[MotionResampling(every_n_epochs=1, seed=2)])
    record = RecordDraws()
    with record:
        trainer.fit(module, datamodule=dm)
    assert trainer.callbacks[0].generator.device == dm.motions.device  # the crash of REVIEW 1: it was always CPU
    return record


@pytest.mark.parametrize("recurrent", [None, "both"])
def test_every_sampler_of_a_training_run_draws_on_the_device_of_its_tensors(tmp_path, recurrent) -> None:
    record = fit_with_every_sampler(tmp_path, recurrent)
    wrong = [d for d in record.draws if d[1] is None or rng.canonical_device(d[1]) != rng.canonical_device(d[2])]
    assert wrong == [], wrong  # no draw from torch's global RNG, none across devices
    seen = {caller for d in record.draws for caller in d[3]}
    samplers = {"library.sample_motions", "library.sample_times", "motion_resampling.resample",
                "networks.sample_actions", "replay.select", "replay.sample", "observations.sample_demo_amp_obs"}
    if recurrent:  # segment shuffle; uniform start times with a frame-0 share
        samplers |= {"segments.segment_minibatches", "env._reset_envs"}
    else:  # step shuffle; failure-weighted start times
        samplers |= {"dataset._shuffled_steps", "start_sampling.sample"}
    assert samplers <= seen, samplers - seen
