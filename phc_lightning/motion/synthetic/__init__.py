"""The bundled synthetic motions (``assets/motions.npz``): procedural clips made with a footstep and balance plan.

Only the regeneration command and the tests import it (``python -m phc_lightning.motion.synthetic``); training
reads the shipped file. It may import :mod:`phc_lightning.core` and the motion pipeline (FK, file formats).
"""
