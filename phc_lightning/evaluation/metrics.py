"""Motion-tracking evaluation metrics (PHC / smpl_sim ``compute_metrics_lite`` definitions).

Per motion, ``pred`` are the simulated and ``gt`` the reference body positions, ``[T, J, 3]`` in metres
(J = 24 for the SMPL humanoid, body 0 = pelvis = root). Every error is a per-frame Euclidean distance
averaged over bodies, in **millimetres**:

==============  =========  ==============================================================================
error           frames     per-frame value
==============  =========  ==============================================================================
``mpjpe_g``     T          ``‖pred − gt‖`` (global positions)
``mpjpe_l``     T          same after subtracting each frame's root position from both
``mpjpe_pa``    T          root-relative error after per-frame Procrustes alignment of pred onto gt
                           (rotation, uniform scale, translation; smpl_sim ``p_mpjpe``)
``vel_dist``    T − 1      ``‖Δpred − Δgt‖``, Δ the per-frame difference (no division by dt)
``accel_dist``  T − 2      ``‖Δ²pred − Δ²gt‖``
==============  =========  ==============================================================================

:class:`MotionTrackingMetrics` accumulates frame sums over many motions (frame-weighted, like smpl_sim with
``concatenate=True``), over all motions and over successful ones, and syncs across processes through
torchmetrics' own ``dist_reduce_fx="sum"`` states.
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Tuple, Union

import torch
from torchmetrics import Metric

Tensor = torch.Tensor

ERROR_NAMES = ("mpjpe_g", "mpjpe_l", "mpjpe_pa", "vel_dist", "accel_dist")
# Number of frames each error loses at the end of a motion (finite differences).
_FRAME_OFFSET = {"mpjpe_g": 0, "mpjpe_l": 0, "mpjpe_pa": 0, "vel_dist": 1, "accel_dist": 2}


def evaluation_score(success_rate: float, mpjpe_g: float) -> Tuple[float, float]:
    """Sort key of evaluations, larger is better: the success rate, then the lower ``mpjpe_g`` (a NaN rate or error
    counts as the worst)."""
    rate = -math.inf if math.isnan(success_rate) else float(success_rate)
    error = math.inf if math.isnan(mpjpe_g) else float(mpjpe_g)
    return rate, -error


def _check_positions(pred: Tensor, gt: Tensor, min_dims: int = 3) -> None:
    if pred.shape != gt.shape:
        raise ValueError(f"pred/gt: shapes differ, {tuple(pred.shape)} vs {tuple(gt.shape)}")
    if pred.dim() < min_dims or pred.shape[-1] != 3 or pred.shape[-2] < 1:
        raise ValueError(f"pred/gt: expected body positions [..., T, J, 3], got shape {tuple(pred.shape)}")


def procrustes_align(source: Tensor, target: Tensor, eps: float = 1e-12) -> Tensor:
    """Best similarity transform of ``source`` onto ``target`` (smpl_sim ``compute_similarity_transform``).

    Solves ``min_{s,R,t} ‖s·source·R + t − target‖`` per leading index with one batched SVD, with the
    reflection fix so that ``R`` is a proper rotation (det = +1).

    Args:
        source: point sets ``[..., J, 3]`` (rows are points).
        target: point sets ``[..., J, 3]``.
        eps: floor on the source variance, so degenerate sets (all points equal) give finite output.

    Returns:
        ``source`` aligned onto ``target``, ``[..., J, 3]``.
    """
    mu_src = source.mean(dim=-2, keepdim=True)
    mu_tgt = target.mean(dim=-2, keepdim=True)
    x_src = source - mu_src
    x_tgt = target - mu_tgt
    var_src = (x_src**2).sum(dim=(-2, -1)).clamp_min(eps)  # [...]
    # K = X_src^T X_tgt = U S V^T  ->  R = U Z V^T maximises tr(R^T K) for row-vector points.
    k = x_src.transpose(-1, -2) @ x_tgt  # [..., 3, 3]
    # Non-finite frames (exploded simulation) would make the SVD fail; their errors stay NaN anyway.
    u, s, vh = torch.linalg.svd(torch.nan_to_num(k, nan=0.0, posinf=0.0, neginf=0.0))
    sign = torch.sign(torch.linalg.det(u @ vh))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    z = torch.ones_like(s)
    z[..., -1] = sign
    rot = u @ (z.unsqueeze(-1) * vh)  # U diag(z) V^T
    scale = (s * z).sum(dim=-1) / var_src  # [...]
    return scale[..., None, None] * (x_src @ rot) + mu_tgt


def motion_errors(pred: Tensor, gt: Tensor) -> Dict[str, Tensor]:
    """Per-frame tracking errors of one motion (or a batch of equally long motions), in millimetres.

    Args:
        pred: simulated body positions ``[..., T, J, 3]``, metres, body 0 = root.
        gt: reference body positions, same shape.

    Returns:
        ``{"mpjpe_g", "mpjpe_l", "mpjpe_pa": [..., T], "vel_dist": [..., T-1], "accel_dist": [..., T-2]}``,
        each value the mean over the J bodies of that frame.
    """
    _check_positions(pred, gt)
    pred_l = pred - pred[..., :1, :]
    gt_l = gt - gt[..., :1, :]

    vel = torch.diff(pred, dim=-3) - torch.diff(gt, dim=-3)
    accel = torch.diff(pred, n=2, dim=-3) - torch.diff(gt, n=2, dim=-3)
    return {
        "mpjpe_g": _body_mean(pred - gt),
        "mpjpe_l": _body_mean(pred_l - gt_l),
        "mpjpe_pa": _body_mean(procrustes_align(pred_l, gt_l) - gt_l),
        "vel_dist": _body_mean(vel),
        "accel_dist": _body_mean(accel),
    }


class MotionTrackingMetrics(Metric):
    """Frame-weighted tracking errors and success rate over evaluated motions.

    ``update`` takes one motion ``[T, J, 3]`` or a padded batch ``[B, T, J, 3]`` with per-motion
    ``lengths``; ``compute`` returns

    - ``success_rate`` = 1 − failed / num_motions,
    - ``mpjpe_g``, ``mpjpe_l``, ``mpjpe_pa``, ``vel_dist``, ``accel_dist`` (mm) over all motions,
    - the same with suffix ``_succ`` over successful motions only,
    - ``num_motions`` and ``num_failed``.

    An error is NaN when no frame contributed to it (e.g. ``*_succ`` when every motion failed).

    Example:
        >>> metrics = MotionTrackingMetrics()
        >>> metrics.update(pred, gt, success=True)   # pred, gt: [T, 24, 3]
        >>> metrics.compute()["mpjpe_g"]
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        # float64 sums: millions of frames of millimetre errors would lose digits in float32.
        for name in ERROR_NAMES:
            for suffix in ("", "_succ"):
                self.add_state(f"sum_{name}{suffix}", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
                self.add_state(f"frames_{name}{suffix}", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("num_motions", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("num_failed", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(
        self,
        pred: Optional[Tensor],
        gt: Optional[Tensor],
        success: Union[bool, Tensor],
        lengths: Optional[Tensor] = None,
        sums: Optional[Dict[str, Tensor]] = None,
        frames: Optional[Dict[str, Tensor]] = None,
    ) -> None:
        """Add one motion or a padded batch of motions: whole trajectories, or errors summed while they played.

        Args:
            pred: simulated body positions, metres, ``[T, J, 3]`` (one motion) or ``[B, T, J, 3]``; None with
                ``sums``.
            gt: reference body positions, same shape.
            success: whether each motion was tracked to its end: a bool, or ``[B]`` bool for a batch.
            lengths: ``[B]`` valid frames per motion in a batch (frames ``>= length`` are padding and
                ignored); ``None`` means every motion uses all T frames.
            sums: instead of trajectories, per error name ``[B]`` sums of the per-frame error over each motion's
                frames, mm (:class:`StreamingErrors`).
            frames: with ``sums``, per error name ``[B]`` the number of frames in each sum.
        """
        if sums is not None:
            self._add(sums, frames, torch.as_tensor(success).reshape(-1).bool())
            return
        _check_positions(pred, gt)
        if pred.dim() == 3:
            pred, gt = pred.unsqueeze(0), gt.unsqueeze(0)
        elif pred.dim() != 4:
            raise ValueError(f"pred/gt: expected [T, J, 3] or [B, T, J, 3], got shape {tuple(pred.shape)}")
        num, horizon = pred.shape[0], pred.shape[1]
        device = pred.device
        success = torch.as_tensor(success, device=device).reshape(-1)
        if success.dtype != torch.bool or success.numel() != num:
            raise ValueError(
                f"success: expected {num} bool value(s), got {success.dtype} of shape {tuple(success.shape)}"
            )
        if lengths is None:
            lengths = torch.full((num,), horizon, dtype=torch.long, device=device)
        else:
            lengths = torch.as_tensor(lengths, device=device).reshape(-1).long()
            if lengths.numel() != num:
                raise ValueError(f"lengths: expected {num} values, got shape {tuple(lengths.shape)}")
            if bool(((lengths < 1) | (lengths > horizon)).any()):
                raise ValueError(f"lengths: every value must be in [1, {horizon}], got {lengths.tolist()}")

        errors = motion_errors(pred, gt)
        frame_idx = torch.arange(horizon, device=device)
        sums, counts = {}, {}
        for name in ERROR_NAMES:
            err = errors[name]  # [B, T - offset]
            valid = frame_idx[: err.shape[1]].unsqueeze(0) < (lengths - _FRAME_OFFSET[name]).unsqueeze(1)
            # where(), not a product with the mask: padded frames may hold NaN/garbage.
            sums[name] = torch.where(valid, err, torch.zeros_like(err)).sum(dim=1).double()  # [B]
            counts[name] = valid.sum(dim=1)  # [B]
        self._add(sums, counts, success)

    def _add(self, sums: Dict[str, Tensor], frames: Dict[str, Tensor], success: Tensor) -> None:
        success = success.to(self.num_motions.device)
        for name in ERROR_NAMES:
            per_motion = sums[name].to(self.num_motions.device).double()
            count = frames[name].to(self.num_motions.device).long()
            setattr(self, f"sum_{name}", getattr(self, f"sum_{name}") + per_motion.sum())
            setattr(self, f"frames_{name}", getattr(self, f"frames_{name}") + count.sum())
            setattr(self, f"sum_{name}_succ", getattr(self, f"sum_{name}_succ") + per_motion[success].sum())
            setattr(self, f"frames_{name}_succ", getattr(self, f"frames_{name}_succ") + count[success].sum())
        self.num_motions += success.numel()
        self.num_failed += (~success).sum()

    def update_batch(self, pred: Tensor, gt: Tensor, lengths: Tensor, success: Tensor) -> None:
        """Batched :meth:`update`: ``pred``/``gt`` ``[B, T, J, 3]``, ``lengths`` ``[B]``, ``success`` ``[B]`` bool."""
        # Goes through update() so torchmetrics' update bookkeeping (cache reset, counters) runs.
        self.update(pred, gt, success, lengths=lengths)

    def compute(self) -> Dict[str, Tensor]:
        """Return the metrics described in the class docstring, all as float32 scalar tensors."""
        nan = torch.tensor(float("nan"), dtype=torch.float64, device=self.num_motions.device)
        out = {}
        total = self.num_motions.double()
        out["success_rate"] = torch.where(total > 0, 1.0 - self.num_failed.double() / total.clamp_min(1), nan)
        for name in ERROR_NAMES:
            for suffix in ("", "_succ"):
                frames = getattr(self, f"frames_{name}{suffix}").double()
                value = getattr(self, f"sum_{name}{suffix}") / frames.clamp_min(1)
                out[f"{name}{suffix}"] = torch.where(frames > 0, value, nan)
        out["num_motions"] = total
        out["num_failed"] = self.num_failed.double()
        return {k: v.float() for k, v in out.items()}


class StreamingErrors:
    """Per-env running sums of the per-frame errors of motions while they play.

    Keeps only the last two frames of each env (for the velocity and acceleration differences), so evaluation
    memory does not grow with motion length. Summing frame by frame gives the same sums as
    :func:`motion_errors` over the whole trajectory.

    Args:
        num_envs: envs stepping together.
        device: where the sums live (the env's device).
    """

    def __init__(self, num_envs: int, device: Union[str, torch.device]) -> None:
        self.sums = {name: torch.zeros(num_envs, dtype=torch.float64, device=device) for name in ERROR_NAMES}
        self.frames = {name: torch.zeros(num_envs, dtype=torch.long, device=device) for name in ERROR_NAMES}
        self.seen = torch.zeros(num_envs, dtype=torch.long, device=device)
        self._history: list = []  # up to two earlier (pred, gt) frames, newest last

    def add(self, pred: Tensor, gt: Tensor, active: Tensor) -> Dict[str, Tensor]:
        """One frame ``[N, J, 3]`` of every env; only ``active [N]`` envs (still playing their motion) count.

        Returns:
            This frame's per-env errors ``{name: [N]}`` (``vel_dist`` / ``accel_dist`` once one / two earlier frames
            were added), for :meth:`add_errors` of another accumulator that counts other frames of the same play.
        """
        _check_positions(pred, gt)
        frame = motion_errors(pred.unsqueeze(1), gt.unsqueeze(1))  # [N, 1] each (no differences in one frame)
        per_frame = {name: frame[name][:, 0] for name in ("mpjpe_g", "mpjpe_l", "mpjpe_pa")}
        if self._history:
            prev_p, prev_g = self._history[-1]
            per_frame["vel_dist"] = _body_mean((pred - prev_p) - (gt - prev_g))
        if len(self._history) == 2:
            (p2, g2), (p1, g1) = self._history
            per_frame["accel_dist"] = _body_mean((pred - 2 * p1 + p2) - (gt - 2 * g1 + g2))
        self._history = (self._history + [(pred, gt)])[-2:]
        self.add_errors(per_frame, active)
        return per_frame

    def add_errors(self, per_frame: Dict[str, Tensor], active: Tensor) -> None:
        """Count the per-frame errors ``{name: [N]}`` that :meth:`add` returned for ``active [N]`` envs.

        A difference error counts once this accumulator counted one (velocity) or two (acceleration) earlier frames
        of the env, so ``active`` must select a run of consecutive frames from the env's first counted one.
        """
        needed = {"vel_dist": 1, "accel_dist": 2}
        for name, err in per_frame.items():
            valid = active & (self.seen >= needed.get(name, 0))
            # where(), not a product with the mask: finished envs were reset and hold unrelated frames.
            self.sums[name] += torch.where(valid, err.double(), torch.zeros_like(self.sums[name]))
            self.frames[name] += valid.long()
        self.seen += active.long()


def _body_mean(diff: Tensor) -> Tensor:
    return torch.linalg.vector_norm(diff, dim=-1).mean(dim=-1) * 1000.0
