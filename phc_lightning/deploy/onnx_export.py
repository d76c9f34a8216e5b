"""``phc export --ckpt_path CKPT --out policy.onnx``: the deterministic policy as one ONNX graph.

The graph holds everything between the simulator's observation and the PD controller: observation normalizer
(with its clip), actor MLP (the Gaussian mean), and the action interface (clip to [-1, 1], per-hinge scales, frozen
hinges at 0, and, for residual policies, the reference hinge angles added)::

    obs [N, 934] float32 (raw, as HumanoidTracking returns it)  ─┐
    ref_dof_pos [N, 69] float32 (residual policies only)        ─┤
    state [N, S] float32 (recurrent actors only)                ─┴─> pd_targets [N, 69] rad, actions [N, A]
                                                                     (, next_state [N, S])

A recurrent actor's LSTM state goes in and out of the graph (``S = 2 * lstm_hidden``, ``h`` then ``c``; metadata
``recurrent_state_dim``): feed zeros at every episode start and each call's ``next_state`` to the next call. A
recurrent critic is not part of the deployed policy.

After writing, the file is run with onnxruntime on random observations and compared with the torch module; the
export fails if any output differs by more than ``tolerance``. Metadata (``metadata_props``) records the DoF order,
control rate and action interface, so a deployment can check it runs the policy the way it was trained.
"""

from __future__ import annotations

import inspect
import json
import math
import warnings
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import torch
from torch import nn

from phc_lightning.core import rng, skeleton
from phc_lightning.core.errors import ConfigError
from phc_lightning.learner.checkpoint import load_checkpoint_module
from phc_lightning.rl.networks import set_mlp_dtype
from phc_lightning.task.actions import ACTION_INTERFACE_KEYS

Tensor = torch.Tensor

# 1e-4 rad: onnxruntime and torch sum the float32 products in other orders; on PD targets near pi through an LSTM
# the largest difference over 256 random rows was seen at 1.4e-5, far below anything a PD controller resolves.
DEFAULT_TOLERANCE = 1e-4
OPSET = 17


class DeployedPolicy(nn.Module):
    """Raw observations (and reference hinge angles) -> PD targets and actions, deterministic.

    Args:
        module: a trained ``PHCModule``.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.residual = bool(module.action_interface.residual)
        self.state_size = int(getattr(module.policy, "actor_state_size", 0))

    @property
    def input_names(self) -> List[str]:
        """Graph inputs, in order."""
        return ["obs"] + (["ref_dof_pos"] if self.residual else []) + (["state"] if self.state_size else [])

    @property
    def output_names(self) -> List[str]:
        """Graph outputs, in order."""
        return ["pd_targets", "actions"] + (["next_state"] if self.state_size else [])

    def forward(self, obs: Tensor, *extra: Tensor) -> Tuple[Tensor, ...]:
        """``obs [N, D]`` (, ``ref_dof_pos [N, 69]``) (, ``state [N, S]``) -> ``(pd_targets [N, 69], actions
        [N, A])`` (, ``next_state [N, S]``): the inputs of :attr:`input_names`."""
        rest = list(extra)
        ref_dof_pos = rest.pop(0) if self.residual else None
        if not self.state_size:
            actions = self.module(obs)
            return self.module.pd_targets(actions, ref_dof_pos), actions
        actions, next_state = self.module.policy.actor_step(self.module.obs_norm(obs), rest.pop(0))
        return self.module.pd_targets(actions, ref_dof_pos), actions, next_state


def export_onnx(ckpt_path: str, out: str, tolerance: float = DEFAULT_TOLERANCE, check_rows: int = 256) -> float:
    """Write the deterministic policy of ``ckpt_path`` to ``out`` (ONNX) and check it with onnxruntime.

    Returns:
        The largest absolute difference between onnxruntime and torch over the check batch.

    Raises:
        ConfigError: bad checkpoint or output path, or outputs that differ by more than ``tolerance``.
    """
    out_path = Path(out)
    if out_path.suffix.lower() != ".onnx":
        raise ConfigError(f"--out: {out_path} must end in .onnx")
    module, ckpt = load_checkpoint_module(ckpt_path)
    # Runtimes take float32 graphs: a policy trained with bfloat16 products (model.mlp_dtype) is exported, and
    # checked, with the same weights in float32 (its actions differ from training's by bfloat16 rounding only).
    set_mlp_dtype(module.policy, None)
    policy = DeployedPolicy(module).eval()
    obs_dim = int(module.hparams.obs_dim)
    names = policy.input_names
    example = _random_inputs(policy, 4, seed=0)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    kwargs: Dict[str, Any] = {}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False  # the TorchScript exporter: no onnxscript needed, same graph on torch 2.1-2.13
    with torch.no_grad(), warnings.catch_warnings():
        # The shape checks of the module become constants of the trace; the batch axis stays dynamic.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # The LSTM's h0/c0 are graph inputs, which is what this batch-size warning asks for.
        warnings.filterwarnings("ignore", message=".*batch_size other than 1.*LSTM.*")
        torch.onnx.export(
            policy,
            tuple(example),
            str(out_path),
            input_names=names,
            output_names=policy.output_names,
            dynamic_axes={name: {0: "batch"} for name in names + policy.output_names},
            opset_version=OPSET,
            **kwargs,
        )
    _add_metadata(out_path, policy, obs_dim, ckpt)
    diff = check_onnx(out_path, policy, _random_inputs(policy, check_rows, seed=1))
    if not diff <= tolerance:
        raise ConfigError(f"{out_path}: onnxruntime differs from torch by {diff:.3g} (> {tolerance:g})")
    return diff


def check_onnx(path: Path, policy: DeployedPolicy, inputs: List[Tensor]) -> float:
    """Largest ``|onnxruntime - torch|`` over every output for ``inputs`` (float32 tensors)."""
    import onnxruntime  # lazy: only export needs it

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {arg.name: x.numpy() for arg, x in zip(session.get_inputs(), inputs)}
    got = session.run(policy.output_names, feed)
    with torch.no_grad():
        want = policy(*inputs)
    return max(float(np.abs(g - w.numpy()).max()) for g, w in zip(got, want))


def _random_inputs(policy: DeployedPolicy, rows: int, seed: int) -> List[Tensor]:
    """Observations spread around the normalizer's statistics (some beyond its clip), reference angles and LSTM
    states, as the policy takes them."""
    generator = rng.new_generator(seed, "cpu")
    norm = policy.module.obs_norm
    std = torch.sqrt(norm.var + norm.eps)
    obs = norm.mean + std * 3.0 * rng.randn((rows, norm.dim), generator, "cpu", "export check")
    ref = (rng.rand((rows, skeleton.NUM_DOFS), generator, "cpu", "export check") * 2 - 1) * math.pi
    state = rng.randn((rows, policy.state_size), generator, "cpu", "export check") * 0.5
    inputs = {"obs": obs.float(), "ref_dof_pos": ref.float(), "state": state.float()}
    return [inputs[name] for name in policy.input_names]


def _add_metadata(path: Path, policy: DeployedPolicy, obs_dim: int, ckpt: Dict[str, Any]) -> None:
    """Record DoF order, control rate, sizes and the action interface in the model's ``metadata_props``."""
    import onnx

    module = policy.module

    model = onnx.load(str(path))
    meta = {
        "producer": "phc-lightning",
        "obs_dim": str(obs_dim),
        "dof_names": json.dumps(list(skeleton.DOF_NAMES)),
        "control_dt": repr(skeleton.CONTROL_DT),
        "action_interface": json.dumps({k: module.hparams.get(k) for k in ACTION_INTERFACE_KEYS}),
        "trained_mlp_dtype": str(module.hparams.get("mlp_dtype", "float32")),  # the graph itself is float32
        "env_steps": str(int(ckpt.get("state_dict", {}).get("env_steps", torch.zeros(())).item())),
    }
    if policy.state_size:
        meta["recurrent_state_dim"] = str(policy.state_size)  # zeros at every episode start
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
