"""The package's shape: packages follow the data, every import goes to a layer it may import, nothing imports
itself back, and the module paths of before the packages still import.

Imports are read from the source (every ``import`` statement, also those inside functions and under
``TYPE_CHECKING``), so a lazy import cannot hide a circle or a layer violation.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path
from typing import Dict, List, Set

import pytest

from phc_lightning._moved import MOVED_MODULES
from tests.helpers import ROOT

BELOW_LEARNER = {"core", "sim", "motion", "task", "evaluation", "rl", "amp", "rollout", "learner"}
MAY_IMPORT: Dict[str, Set[str]] = {
    "core": set(),
    "sim": {"core"},
    "motion": {"core", "sim"},
    "motion.synthetic": {"core", "motion"},
    "task": {"core", "sim", "motion"},
    "evaluation": {"core", "sim", "motion", "task"},
    "rl": {"core"},
    "amp": {"core", "sim", "motion", "task", "rl"},
    "rollout": {"core", "sim", "motion", "task", "evaluation", "rl", "amp"},
    "learner": {"core", "sim", "motion", "task", "evaluation", "rl", "amp", "rollout"},
    "callbacks": BELOW_LEARNER,
    "deploy": BELOW_LEARNER,
    "run": BELOW_LEARNER,
    "bench": BELOW_LEARNER | {"callbacks", "run"},
    "cli": BELOW_LEARNER | {"callbacks", "run", "bench", "deploy", "motion.synthetic"},
}
"""Layer -> the layers it may import (the root package ``phc_lightning`` itself is open to all)."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for top in ("phc_lightning", "callbacks") for p in (ROOT / top).rglob("*.py")}


def layer(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "callbacks":
        return "callbacks"
    if parts[1:3] == ["motion", "synthetic"]:
        return "motion.synthetic"
    return parts[1] if len(parts) > 1 and parts[1] != "_moved" else "root"


def imports_of(module: str) -> Set[str]:
    """The package modules ``module`` imports (a name imported from a package counts as its submodule when it
    is one, else as the package's ``__init__``)."""
    out = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names if alias.name in MODULES)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                target = f"{node.module}.{alias.name}"
                out.add(target if target in MODULES else node.module)
    return {name for name in out if name in MODULES}


GRAPH = {module: imports_of(module) for module in MODULES}


def test_every_layer_of_the_package_is_known() -> None:
    assert {layer(m) for m in MODULES} == set(MAY_IMPORT) | {"root"}


def test_every_import_goes_to_a_layer_it_may_import() -> None:
    bad = [f"{module} imports {target}" for module, targets in sorted(GRAPH.items()) for target in sorted(targets)
           if layer(target) not in MAY_IMPORT.get(layer(module), set()) | {layer(module), "root"}]
    assert bad == []


def test_physics_knows_nothing_of_motions_or_the_task_and_nothing_imports_the_command_line() -> None:
    assert not {"motion", "task"} & MAY_IMPORT["sim"]
    assert all("cli" not in allowed for allowed in MAY_IMPORT.values())
    assert not [m for m, targets in GRAPH.items() if layer(m) != "cli" and any(layer(t) == "cli" for t in targets)]


def strongly_connected(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Tarjan's components with more than one module (iterative: no recursion limit)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_module_imports_itself_back() -> None:
    assert strongly_connected(GRAPH) == []


def test_the_circle_finder_finds_a_circle() -> None:
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_every_package_says_its_job_and_what_it_may_import() -> None:
    for init in sorted((ROOT / "phc_lightning").rglob("__init__.py")) + [ROOT / "callbacks" / "__init__.py"]:
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert "import" in doc.lower(), f"{init.relative_to(ROOT)}: say what the package may import"


@pytest.mark.parametrize("old", sorted(MOVED_MODULES))
def test_module_paths_from_before_the_packages_import_the_moved_module(old: str) -> None:
    assert importlib.import_module(old) is importlib.import_module(MOVED_MODULES[old])


def test_names_of_modules_that_became_packages_still_resolve() -> None:
    from phc_lightning.cli import run_cli
    from phc_lightning.evaluation import EvalDataset
    from phc_lightning.rollout import ITERATION_KEY, RolloutDataset
    from phc_lightning.rollout.dataset import RolloutDataset as moved

    assert RolloutDataset is moved and ITERATION_KEY == "iteration"
    assert EvalDataset.__module__ == "phc_lightning.evaluation.playback"
    assert run_cli.__module__ == "phc_lightning.run.lightning_cli"
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        importlib.import_module("phc_lightning.rollout").nothing  # noqa: B018


def test_a_run_config_naming_the_old_csv_logger_still_parses() -> None:
    from jsonargparse import ArgumentParser
    from lightning.pytorch.loggers import Logger

    parser = ArgumentParser()
    parser.add_argument("--logger", type=Logger)
    config = parser.parse_args(["--logger", '{"class_path": "phc_lightning.loggers.CSVLogger", '
                                            '"init_args": {"save_dir": "runs"}}'])
    logger = parser.instantiate_classes(config).logger
    assert type(logger).__module__ == "phc_lightning.run.loggers"


def test_the_observation_size_is_written_down_once() -> None:
    """934 is derived in task/observations.py (OBS_DIM); every other module takes it from there."""
    copies = [module for module, path in sorted(MODULES.items()) for node in ast.walk(ast.parse(path.read_text()))
              if isinstance(node, ast.Constant) and type(node.value) is int and node.value == 934]
    assert copies == [], copies
