"""``phc bench``: speed (:mod:`.env_speed`, :mod:`.train_speed`, :mod:`.raw_physics`), learning (:mod:`.learn`),
evaluation memory (:mod:`.eval_memory`) and AMASS-scale memory (:mod:`.scale`) benchmarks; figures, never tests; and
counting host reads of device tensors (:mod:`.host_reads`, for the tests and ``scripts/gpu_check.py``). May import
everything but the ``phc`` command.
"""
