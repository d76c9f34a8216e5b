"""``phc bench``: speed (:mod:`.env_speed`, :mod:`.train_speed`, :mod:`.raw_physics`), learning
(:mod:`.learn`) and evaluation memory (:mod:`.eval_memory`) benchmarks; figures, never tests. May import
everything but the ``phc`` command.
"""
