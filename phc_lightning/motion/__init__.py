"""The motion pipeline: motion files (native ``.npz``, PHC ``.pkl``, AMASS conversion), forward kinematics, the
device-resident motion library, failure-driven sampling weights and the checks of ``phc motions validate``.
May import core and sim (the state type, the MJCF model); :mod:`.synthetic` (the bundled clips) sits above it."""

from pathlib import Path

# The motions the project generates itself (``python -m phc_lightning.motion.synthetic``), shipped in the package.
BUNDLED_MOTIONS = str(Path(__file__).resolve().parent.parent / "assets" / "motions.npz")
