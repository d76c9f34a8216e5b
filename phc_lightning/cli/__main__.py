"""``python -m phc_lightning.cli``: the ``phc`` command without its console script (e.g. under torchrun)."""

from phc_lightning.cli.command import main

if __name__ == "__main__":
    main()
