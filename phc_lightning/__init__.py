"""phc-lightning: PHC humanoid motion imitation trained with PyTorch Lightning.

The packages follow the data, each importing only the ones before it (``tests/test_architecture.py`` checks it)::

    core        the SMPL skeleton, quaternions, errors, seeds, threads              imports nothing of ours
    sim         physics backends behind one thin interface                          core
    motion      motion files, FK, the motion library, sampling, checks              core, sim
    task        HumanoidTracking: observations, rewards, terminations, resets       core, sim, motion
    evaluation  every motion played once; PHC metrics; the report picture           ... task
    rl          PPO math, networks, normalization, LSTM, segments, several ranks   core
    amp         adversarial motion prior: its data side and its learner side        ... task, rl
    rollout     PHCDataModule, the rollout dataset and its statistics               ... evaluation, rl, amp
    learner     PHCModule (LightningModule) and its hooks, warm start               ... rollout
    deploy      ONNX export and videos of a checkpoint                              ... learner
    run         PHCCLI (LightningCLI): config -> Trainer, module, datamodule; runs   ... learner
    bench       phc bench env | train | learn | eval_memory | scale                  ... run, callbacks
    cli         the phc command                                                     everything; nothing imports it

The Lightning callbacks live in the top-level ``callbacks`` package (beside this one, for users' own callbacks); they
may import anything up to ``learner``.
"""

from phc_lightning import _moved

__version__ = "0.1.0"

_moved.install()  # old module paths (phc_lightning.module, .loggers, ...) keep importing
