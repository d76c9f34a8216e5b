"""Physics backends behind one thin interface (:mod:`phc_lightning.sim.base`): MuJoCo on the CPU, MuJoCo Warp.
May import core only: physics knows nothing of motions or the task."""
