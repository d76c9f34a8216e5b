"""Lightning callbacks for phc-lightning (a top-level package: put your own callbacks beside these).

They may import :mod:`phc_lightning` up to the learner; within it only the benchmarks import them."""

from callbacks.checkpointing import PHCCheckpoint
from callbacks.dashboard import PHCDashboard
from callbacks.eval_stats import EvalStats
from callbacks.lr_annealing import LRAnnealing
from callbacks.motion_resampling import MotionResampling

__all__ = ["EvalStats", "LRAnnealing", "MotionResampling", "PHCCheckpoint", "PHCDashboard"]
