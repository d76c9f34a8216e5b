"""Physics backends behind one thin interface (see :mod:`phc_lightning.sim.base`)."""
