"""The data side of training: :class:`~.datamodule.PHCDataModule` builds the simulator, the motions and the env;
:class:`~.dataset.RolloutDataset` collects one PPO iteration per Lightning epoch, computes GAE and yields the
minibatches; :mod:`.stats` says what a collection saw. May import core, sim, motion, task, evaluation, rl, amp.
"""

from phc_lightning import _moved

# Names of the former module phc_lightning.rollout.
__getattr__ = _moved.old_names(__name__, {
    name: "phc_lightning.rollout.dataset"
    for name in ("RolloutDataset", "RolloutBuffer", "RolloutPolicy", "ITERATION_KEY", "iteration_summary")
})
