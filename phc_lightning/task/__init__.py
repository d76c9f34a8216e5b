"""The tracking task: observations, reward terms, terminations and resets, in torch, backend-agnostic.
May import core, sim and motion."""

from phc_lightning.task.config import TaskConfig as TaskConfig
from phc_lightning.task.env import HumanoidTracking as HumanoidTracking
from phc_lightning.task.env import StepResult as StepResult
from phc_lightning.task.observations import OBS_DIM as OBS_DIM

__all__ = ["OBS_DIM", "HumanoidTracking", "StepResult", "TaskConfig"]
