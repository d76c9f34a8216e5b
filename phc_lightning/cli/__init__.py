"""The ``phc`` command line: argument parsing and dispatch of every verb, nothing else.

The top layer: it may import every package; nothing imports it. Console script ``phc`` and
``python -m phc_lightning.cli`` both run :func:`main`.
"""

from phc_lightning import _moved
from phc_lightning.cli.command import main as main

__all__ = ["main"]

# Names of the former module phc_lightning.cli besides main.
__getattr__ = _moved.old_names(__name__, {
    name: "phc_lightning.run.lightning_cli" for name in ("PHCCLI", "PHCArgumentParser", "run_cli")
})
