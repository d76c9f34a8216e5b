"""What many tests share: this checkout's paths, the real data beside it, and ``phc`` run as a user runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Mapping, Optional

ROOT = Path(__file__).resolve().parents[1]
"""The repository checkout these tests belong to."""
CONFIGS = ROOT / "configs"
SMOKE = str(CONFIGS / "smoke.yaml")
SHARED_DATA = ROOT.parent / "shared" / "data"
"""Real motion data (never committed); tests that use it skip when it is absent."""
CMU_PKL = SHARED_DATA / "cmu_mocap_05_06.pkl"


def checkout_env(base: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """``base`` (default: this process's environment) with this checkout first on ``PYTHONPATH``, so a subprocess
    imports this checkout's package also where another copy is installed (e.g. a git worktree's tests)."""
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def phc(*args: str, cwd: Path, timeout: float = 600, env: Optional[Mapping[str, str]] = None
        ) -> subprocess.CompletedProcess:
    """``python -m phc_lightning.cli ARGS`` of this checkout in ``cwd``, output captured."""
    return subprocess.run([sys.executable, "-m", "phc_lightning.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=checkout_env(env))
