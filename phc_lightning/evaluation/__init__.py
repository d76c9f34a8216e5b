"""PHC's evaluation: every motion played once from t=0, full length, deterministic (:mod:`.playback`), the tracking
errors and success rate (:mod:`.metrics`), and the report picture (:mod:`.report`). The learner's validation hooks
(:mod:`phc_lightning.learner.evaluation_hooks`) feed the metrics; the ``EvalStats`` callback writes the files.
May import core, sim, motion and task.
"""

from phc_lightning import _moved

# Names of the former module phc_lightning.evaluation.
__getattr__ = _moved.old_names(__name__, {
    name: "phc_lightning.evaluation.playback" for name in ("EvalDataset", "play_motions", "per_motion_rows")
})
