"""Module paths from before the subpackages (0.1.x), kept importable: configs, run directories and users' code
name them (``phc_lightning.loggers.CSVLogger`` is written into every ``config.yaml`` of a CSV-logged run).

``import phc_lightning.module`` returns the very module object ``phc_lightning.learner.module`` (same classes, so
``isinstance`` and class paths agree); nothing is imported until an old name is asked for. New code uses the new
paths. Old paths that are now package names (``rollout``, ``evaluation``, ``bench``, ``cli``,
``motion.synthetic``) are served by those packages themselves.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType
from typing import Any, Callable, Dict, Optional, Sequence

MOVED_MODULES: Dict[str, str] = {
    f"phc_lightning.{old}": f"phc_lightning.{new}"
    for old, new in {
        "skeleton": "core.skeleton",
        "rotations": "core.rotations",
        "errors": "core.errors",
        "seeding": "core.seeding",
        "threads": "core.threads",
        "ppo": "rl.ppo",
        "networks": "rl.networks",
        "recurrent": "rl.recurrent",
        "segments": "rl.segments",
        "distributed": "rl.distributed",
        "data": "rollout.datamodule",
        "rollout_stats": "rollout.stats",
        "module": "learner.module",
        "iteration_hooks": "learner.iteration_hooks",
        "tracking_eval": "learner.evaluation_hooks",
        "warm_start": "learner.warm_start",
        "eval_metrics": "evaluation.metrics",
        "eval_report": "evaluation.report",
        "bench_learn": "bench.learn",
        "bench_eval": "bench.eval_memory",
        "sim.raw_bench": "bench.raw_physics",
        "export": "deploy.onnx_export",
        "render": "deploy",
        "render.policy_video": "deploy.policy_video",
        "render.preview": "deploy.motion_preview",
        "render.scene": "deploy.scene",
        "run_dir": "run.directory",
        "loggers": "run.loggers",
        "verbs": "cli.verbs",
        "pipeline_verbs": "cli.pipeline_verbs",
        "motion.gait": "motion.synthetic.gait",
        "motion.gait_plan": "motion.synthetic.gait_plan",
    }.items()
}
"""Old dotted module path -> the module it became."""


class MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers an import of an old path with the module at its new path (registered under both names)."""

    def find_spec(
        self, fullname: str, path: Optional[Sequence[str]], target: Optional[ModuleType] = None
    ) -> Optional[importlib.machinery.ModuleSpec]:
        if fullname not in MOVED_MODULES:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(MOVED_MODULES[spec.name])

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the module at the new path is already imported."""


def install() -> None:
    """Put the finder first on ``sys.meta_path``, once. First, because an old package path (``render``) points into
    a new package's folder, where the standard finder would load a second copy of each module under the old name;
    no real module lives at an old path, and every other name passes straight through."""
    if not any(isinstance(finder, MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, MovedModuleFinder())


def old_names(package: str, homes: Dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` (PEP 562) for a package that replaced a module of the same name: each old
    module-level name is looked up, when first asked for, in its new home module."""

    def __getattr__(name: str) -> Any:
        if name in homes:
            return getattr(importlib.import_module(homes[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
