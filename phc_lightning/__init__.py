"""phc-lightning: PHC humanoid motion imitation trained with PyTorch Lightning."""

__version__ = "0.1.0"
