"""What one policy trained by several processes (Lightning DDP) needs beyond DDP's gradient all-reduce.

Every rank runs its own ``num_envs`` envs; DDP averages the gradients. What else must agree across ranks is merged
here, identically on every rank, so the ranks never drift apart:

- the observation and value normalizers (:func:`update_norm_across_ranks`: the per-rank batch statistics are
  gathered and combined with the parallel-variance formula, in rank order);
- the approx KL that stops an iteration early and drives the adaptive learning rate (:func:`mean_across_ranks`);
  a rank that skipped its minibatches while another stepped would hang DDP's all-reduce;
- the once-per-iteration logs (:func:`mean_logs_across_ranks`), whose keys may differ between ranks (a rank with
  no finished episode has no ``charts/episode_return``), so Lightning's per-key ``sync_dist`` cannot be used;
- the evaluation rows (:func:`gather_objects`), and every rank's data state for the checkpoint, which only rank 0
  (the writer) receives (:func:`gather_to_first`).

Lightning's DDP wrapper also broadcasts rank 0's buffers before every forward; :func:`stop_buffer_broadcast`
turns that off (see there).

Outside a process group (one process) every function is the identity, so single-process runs are bit for bit
what they were.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.distributed as dist

from phc_lightning.rl.normalization import RunningNorm, merge_moments

Tensor = torch.Tensor


def world_size() -> int:
    """Processes training this policy (1 without an initialized process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's global rank (0 without an initialized process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def gather_objects(obj: Any) -> List[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (pickled; keep it small and on the CPU)."""
    if world_size() == 1:
        return [obj]
    out: List[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def gather_to_first(obj: Any) -> Optional[List[Any]]:
    """``[obj of rank 0, obj of rank 1, ...]`` on rank 0, None on every other rank (pickled; on the CPU).

    Every rank must call it. Only the receiver holds more than its own part, so what the other ranks hold does not
    grow with the number of processes (an all-gather would give every rank all of them). Rank 0 receives one rank
    at a time, so besides the parts it keeps it holds one message in transit (``gather_object`` would hold every
    rank's serialized bytes and the rebuilt parts at once).
    """
    if world_size() == 1:
        return [obj]
    if rank() != 0:
        dist.send_object_list([obj], dst=0)
        return None
    out = [obj]
    for source in range(1, world_size()):
        box: List[Any] = [None]
        dist.recv_object_list(box, src=source)
        out.append(box[0])
    return out


def to_cpu(obj: Any) -> Any:
    """``obj`` with every tensor in nested dicts/lists/tuples moved to the CPU (before pickling it to peers: a CUDA
    tensor would unpickle onto the sender's device)."""
    if isinstance(obj, Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def mean_across_ranks(value: float) -> float:
    """The mean of a scalar over all ranks (the value itself in one process)."""
    if world_size() == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return float(t) / world_size()


def mean_logs_across_ranks(logs: Dict[str, float]) -> Dict[str, float]:
    """Each key's mean over the ranks that logged it; identical dict on every rank."""
    if world_size() == 1:
        return logs
    gathered = gather_objects(logs)
    keys = sorted({key for part in gathered for key in part})
    out = {}
    for key in keys:
        values = [part[key] for part in gathered if key in part]
        out[key] = sum(values) / len(values)
    return out


def stop_buffer_broadcast(model: Any) -> None:
    """No buffer broadcast before each forward of a ``DistributedDataParallel`` ``model`` (else: nothing).

    Evaluation during fit runs ``validation_step`` through the wrapper, and the ranks play different numbers of
    motion chunks, so a per-forward broadcast (a collective) would leave one rank waiting forever. The buffers are
    equal on every rank by construction (normalizers merged here, counters count all ranks), so the broadcast only
    cost time, and it would hide a merge that went wrong.
    """
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        for name in ("forward_sync_buffers", "broadcast_buffers"):  # torch >= 2.12 reads the first, older the second
            if hasattr(model, name):
                setattr(model, name, False)


def finds_unused_parameters(model: Any) -> bool:
    """Whether a backward may leave some of ``model``'s parameters without a gradient: a
    ``DistributedDataParallel`` wrapper only with ``find_unused_parameters`` (else its all-reduce waits for them);
    anything else always."""
    return not isinstance(model, torch.nn.parallel.DistributedDataParallel) or bool(model.find_unused_parameters)


def batch_moments(x: Tensor) -> Tuple[int, Tensor, Tensor]:
    """``(count, mean [D], population var [D])`` of ``x [B, D]``."""
    var, mean = torch.var_mean(x, dim=0, correction=0)
    return x.shape[0], mean, var


def combine_moments(parts: List[Tuple[int, Tensor, Tensor]]) -> Tuple[int, Tensor, Tensor]:
    """The ``(count, mean, var)`` summaries combined in the given order, in float64 (the merge of
    :func:`~phc_lightning.rl.normalization.merge_moments`)."""
    parts = [(n, m.double(), v.double()) for n, m, v in parts if n]
    if not parts:
        raise ValueError("combine_moments: every part is empty")
    count, mean, var = parts[0]
    for n, m, v in parts[1:]:
        count, mean, var = merge_moments(count, mean, var, n, m, v)
    return count, mean, var


def update_norm_across_ranks(norm: RunningNorm, x: Tensor) -> None:
    """Merge the batch ``x [..., D]`` of every rank into ``norm``, identically on every rank.

    One process: ``norm.update(x)``. Several: each rank checks and summarizes its own batch, the summaries (not the
    batches) are gathered, combined in rank order and merged once, so all ranks hold the same statistics and equal
    those of one process that saw every rank's batch (up to float rounding).
    """
    if world_size() == 1:
        norm.update(x)
        return
    x = norm.check_batch(x)
    n, mean, var = batch_moments(x)
    # NCCL gathers only CUDA tensors: summarize where the normalizer lives (the module's device)
    local = torch.cat([torch.tensor([float(n)], dtype=torch.float64), mean.double().cpu(), var.double().cpu()])
    local = local.to(norm.mean.device)
    gathered = [torch.empty_like(local) for _ in range(world_size())]
    dist.all_gather(gathered, local)
    dim = norm.dim
    parts = [(int(g[0].item()), g[1 : 1 + dim], g[1 + dim :]) for g in gathered]
    count, mean_all, var_all = combine_moments(parts)
    norm.merge(count, mean_all.to(norm.mean.dtype), var_all.to(norm.var.dtype))
