"""What every layer shares: the SMPL humanoid's skeleton and timing (:mod:`~phc_lightning.core.skeleton`),
quaternions in the package's one convention, xyzw (:mod:`~phc_lightning.core.rotations`), the user-error type,
seed derivation and a one-thread helper. Imports nothing else of the package.
"""
