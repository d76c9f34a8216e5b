"""Offscreen MuJoCo rendering of reference motions and policy rollouts to GIF / MP4."""
