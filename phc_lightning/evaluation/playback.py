"""The evaluation rollout: every motion exactly once, full length, from t=0, deterministic actions.

Motions are played in chunks of ``num_envs`` (all envs step together; envs beyond the last motion of a chunk
replay motions whose results are discarded). Each yielded item is one chunk's finished trajectories; the module
turns them into metrics (``validation_step``), so evaluation runs through Lightning's own validation loop.
"""

from __future__ import annotations

from typing import Callable, Dict, Iterator, List, Optional

import torch
from torch.utils.data import IterableDataset

from phc_lightning.evaluation.metrics import ERROR_NAMES, StreamingErrors
from phc_lightning.evaluation.phc_convention import PHCChunk, phc_num_steps
from phc_lightning.motion.library import MotionLibrary
from phc_lightning.task.env import HumanoidTracking

Tensor = torch.Tensor
# Steps between two host reads of whether a chunk still plays (a read every step would make the host wait for the
# device every step). The steps played after the chunk is over change nothing: no env is active, and PHC's
# bookkeeping sees no termination and counts no frame.
STOP_CHECK_STEPS = 8


@torch.no_grad()
def play_motions(
    env: HumanoidTracking, module: torch.nn.Module, motion_ids: Tensor, zero_actions: bool = False
) -> Dict[str, Tensor]:
    """Play ``motion_ids [K]`` (K <= num_envs) once each from t=0 until each ends or fails.

    ``zero_actions``: the baseline policy that always outputs 0 under ``module``'s action interface (in residual
    mode: PD targets exactly on the reference) instead of ``module``'s deterministic actions.

    Errors are summed frame by frame as the motions play (:class:`StreamingErrors`), so memory does not grow with
    motion length. PHC's convention is summed in the same play (:class:`PHCChunk`): a failed motion's env is reset
    and replays it, as in PHC, while our errors stop at its failure.

    Returns:
        ``motion_ids [K]``; ``lengths [K]`` steps played; ``success [K]`` bool (the motion reached its last frame
        without the 20-body mean error exceeding the failure distance); ``sums/<error>`` ``[K]`` float64 sums of
        each per-frame error (mm) over the motion's frames and ``frames/<error>`` ``[K]`` their counts, for every
        error of :data:`~phc_lightning.evaluation.metrics.ERROR_NAMES`; ``phc/success``, ``phc/sums/<error>`` and
        ``phc/frames/<error>`` the same under PHC's convention.
    """
    num = motion_ids.numel()
    n = env.num_envs
    if num > n:
        raise ValueError(f"play_motions got {num} motions for {n} envs")
    # Fill spare envs with the chunk's own motions so every env runs something valid.
    fill = motion_ids[torch.arange(n, device=motion_ids.device) % num]
    obs = env.assign_motions(fill.to(env.device))
    frames = env.motions.num_frames[fill.to(env.motions.num_frames.device)].to(env.device)
    fps = env.motions.fps[fill.to(env.motions.fps.device)].to(env.device)
    # Steps to play a motion to its end at the control rate (the env truncates once time >= length).
    max_steps = int(torch.ceil((frames - 1).float() / fps / env.control_dt).max().item()) + 2
    phc = PHCChunk(phc_num_steps(frames, fps, env.control_dt), torch.arange(n, device=env.device) < num)
    max_steps = max(max_steps, int(phc.num_steps.max()))
    active = torch.ones(n, dtype=torch.bool, device=env.device)
    success = torch.zeros(n, dtype=torch.bool, device=env.device)
    lengths = torch.zeros(n, dtype=torch.long, device=env.device)
    errors, phc_errors = StreamingErrors(n, env.device), StreamingErrors(n, env.device)
    device = next(module.parameters()).device
    # the actor's memory only (the critic never runs here); every motion starts with a blank one
    state = torch.zeros(n, module.actor_state_size, device=device)
    playing = torch.ones((), dtype=torch.bool, device=env.device)  # whether the chunk is not over (on the device)
    for step in range(max_steps):
        if zero_actions:
            actions = torch.zeros(n, module.action_dim, device=device)
        else:
            actions, state = module.act_deterministic(obs.to(device), state)
        result = env.step(module.pd_targets(actions.to(env.device), env.ref_next_dof_pos))
        # an env that ended was reset (its replays are discarded, but start them afresh as training would)
        state = state.masked_fill((result.terminated | result.truncated).to(device).unsqueeze(-1), 0.0)
        # finished envs were auto-reset: their later frames do not count
        frame = errors.add(result.info["body_pos"], result.info["ref_body_pos"], active)
        # PHC has no unstable envs; one our backend had to rescue is a failure there too
        phc_errors.add_errors(frame, phc.record(step, (result.terminated | result.info["unstable"]) & playing))
        lengths += active.long()
        finished = active & (result.terminated | result.truncated)
        # A motion succeeds only if it ran out by reaching its end, not by failing or by a physics reset.
        reached_end = result.truncated & ~result.terminated & ~result.info["unstable"]
        success |= finished & reached_end
        active &= ~finished
        obs = result.obs
        playing = active.any() | phc.wants_frames(step + 1)
        if (step + 1) % STOP_CHECK_STEPS == 0 and not bool(playing):
            break
    env.check_physics()
    out = {"motion_ids": motion_ids, "lengths": lengths[:num], "success": success[:num]}
    for name in ERROR_NAMES:
        out[f"sums/{name}"] = errors.sums[name][:num]
        out[f"frames/{name}"] = errors.frames[name][:num]
        out[f"phc/sums/{name}"] = phc_errors.sums[name][:num]
        out[f"phc/frames/{name}"] = phc_errors.frames[name][:num]
    out["phc/success"] = ~phc.failed[:num]
    return out


class EvalDataset(IterableDataset):
    """Yields :func:`play_motions` results chunk by chunk until every motion was played once.

    Args:
        env: the tracking env; eval mode for the pass, then its episodes, physics and RNG are restored.
        get_module: returns the current policy module.
        on_done: called after the pass (e.g. so the training rollout restarts from fresh resets).
        zero_actions: play the zero-action baseline under the module's action interface instead of its policy.
        rank: this process's global rank; it plays motions ``rank, rank + world_size, ...``.
        world_size: processes sharing the evaluation (each motion is played once overall).
        motions: the motions to evaluate (default: the env's own). An ``index_only`` library is played chunk by
            chunk, each chunk's motions built as a small library of their own and handed to the env for the
            chunk, so memory holds one chunk of motions at a time however large the set is.
    """

    def __init__(
        self,
        env: HumanoidTracking,
        get_module: Callable[[], torch.nn.Module],
        on_done: Optional[Callable[[], None]] = None,
        zero_actions: bool = False,
        rank: int = 0,
        world_size: int = 1,
        motions: Optional[MotionLibrary] = None,
    ) -> None:
        super().__init__()
        self.env = env
        self.get_module = get_module
        self.on_done = on_done
        self.zero_actions = zero_actions
        self.rank = rank
        self.world_size = world_size
        self.motions = motions

    # No __len__ on purpose: Lightning then runs the generator to StopIteration, so the clean-up below happens at
    # a fixed point of the loop instead of whenever the abandoned generator is garbage-collected.
    def __iter__(self) -> Iterator[Dict[str, Tensor]]:
        module = self.get_module()
        # Evaluation leaves no trace on training: every episode, the physics and the RNG are put back afterwards,
        # so a run's training trajectory does not depend on when it was evaluated.
        saved, own_motions = self.env.state_dict(), self.env.motions
        source = self.motions if self.motions is not None else own_motions
        self.env.set_eval(True)
        try:
            all_ids = torch.arange(source.num_motions)[self.rank :: self.world_size]
            for chunk in all_ids.split(self.env.num_envs):
                if not source.index_only:
                    yield play_motions(self.env, module, chunk, self.zero_actions)
                    continue
                self.env.motions = own_motions  # the previous chunk's buffers go before the next are built
                self.env.motions = source.subset(chunk.tolist())
                result = play_motions(self.env, module, torch.arange(chunk.numel()), self.zero_actions)
                result["motion_ids"] = chunk  # ids of the evaluated set, not of the chunk's library
                yield result
        finally:
            self.env.motions = own_motions
            self.env.load_state_dict(saved)
            if self.on_done is not None:
                self.on_done()


def per_motion_rows(result: Dict[str, Tensor]) -> List[Dict[str, float]]:
    """One row per played motion: id, steps played, success and its mean errors (mm) over its own frames."""
    means = {}
    for name in ("mpjpe_g", "mpjpe_l", "mpjpe_pa"):
        frames = result[f"frames/{name}"].double()
        means[name] = torch.where(frames > 0, result[f"sums/{name}"] / frames.clamp_min(1), float("nan")).tolist()
    return [
        {
            "motion_id": int(mid),
            "steps_played": int(steps),
            "success": bool(ok),
            **{name: means[name][i] for name in means},
        }
        for i, (mid, steps, ok) in enumerate(zip(result["motion_ids"].tolist(), result["lengths"].tolist(),
                                                 result["success"].tolist()))
    ]
