"""``python -m phc_lightning.motion.synthetic --out FILE``: regenerate the bundled motions (byte-identical)."""

from phc_lightning.motion.synthetic.clips import main

if __name__ == "__main__":
    main()
