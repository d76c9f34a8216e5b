"""One training or evaluation run: :class:`~.lightning_cli.PHCCLI` (LightningCLI) turns a config into a Trainer, a
PHCModule and a PHCDataModule; :mod:`.directory` gives each run its folder and resumes into it; :mod:`.loggers` a
CSV logger that appends on resume. May import everything up to the learner; the ``phc`` command and the benchmarks
use it.
"""
