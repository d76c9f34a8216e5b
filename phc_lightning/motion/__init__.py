"""Motion files, forward kinematics and the device-resident motion library."""

from pathlib import Path

# The motions the project generates itself (``python -m phc_lightning.motion.synthetic``), shipped in the package.
BUNDLED_MOTIONS = str(Path(__file__).resolve().parent.parent / "assets" / "motions.npz")
