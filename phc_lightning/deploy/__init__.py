"""What leaves training: a checkpoint's deterministic policy as one ONNX graph (:mod:`.onnx_export`), videos of it
beside its reference (:mod:`.policy_video`) and of motion files alone (:mod:`.motion_preview`), drawn by
:mod:`.scene`. May import everything up to the learner.
"""
