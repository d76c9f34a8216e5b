"""The CLI's warning filters are installed when the CLI runs, not when its module is imported."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import ROOT, checkout_env

PROBE = """
import warnings
import phc_lightning.run.lightning_cli as cli
ours = ("IterableDataset", "LeafSpec", "LightningCLI's args", "logging on epoch level")

def installed():
    return [f for f in warnings.filters if f[1] is not None and any(o in f[1].pattern for o in ours)]

assert installed() == [], "importing the CLI module installed " + repr(installed())
cli.ignore_expected_warnings()
assert len(installed()) == 4 and all(f[0] == "ignore" for f in installed()), installed()
"""

def test_importing_the_cli_changes_no_warning_filter_and_running_it_installs_them() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=checkout_env(), capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
