"""Frames of the humanoid from ``qpos`` sequences with MuJoCo's offscreen renderer, written as GIF or MP4.

Headless: MuJoCo picks its OpenGL platform from ``MUJOCO_GL`` when it is first imported, and defaults to GLFW,
which needs a display. Without ``MUJOCO_GL`` and without ``DISPLAY`` this module uses EGL (Mesa: Debian packages
``libegl1 libgl1-mesa-dri``), falling back to OSMesa (``libosmesa6``). Set ``MUJOCO_GL`` to choose yourself.

A second, translucent humanoid (the reference) can be drawn into the same picture: its geoms are added to the
scene from a second ``MjData`` of the same model (``mjv_addGeoms``), recoloured, optionally shifted sideways.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

import mujoco
import numpy as np

from phc_lightning.core.errors import ConfigError
from phc_lightning.sim.mujoco_cpu import load_model

GL_PACKAGES = "libegl1 libgl1-mesa-dri (EGL) or libosmesa6 (with MUJOCO_GL=osmesa)"
"""Debian/Ubuntu packages that give MuJoCo a headless OpenGL context."""

GHOST_RGBA = (0.35, 0.65, 1.0, 0.35)
"""Colour of the translucent reference humanoid."""

VIDEO_SUFFIXES = (".gif", ".mp4")


def _headless_context_class() -> Optional[type]:
    """EGL's (else OSMesa's) GL context class when MuJoCo would otherwise try GLFW without a display."""
    if os.environ.get("MUJOCO_GL") or os.environ.get("DISPLAY") or sys.platform != "linux":
        return None
    for module in ("mujoco.egl", "mujoco.osmesa"):
        try:
            return importlib.import_module(module).GLContext
        except (ImportError, OSError, AttributeError):
            continue
    return None


def make_renderer(model: mujoco.MjModel, width: int, height: int) -> mujoco.Renderer:
    """A ``mujoco.Renderer`` of ``width x height`` pixels that works without a display.

    Raises:
        ConfigError: no OpenGL platform could be started (names the packages to install).
    """
    if width < 16 or height < 16:
        raise ConfigError(f"--width/--height must be at least 16 pixels, got {width}x{height}")
    model.vis.global_.offwidth = max(int(model.vis.global_.offwidth), width)
    model.vis.global_.offheight = max(int(model.vis.global_.offheight), height)
    headless = _headless_context_class()
    gl_module = importlib.import_module(mujoco.Renderer.__module__).gl_context
    saved = getattr(gl_module, "GLContext", None)
    try:
        if headless is not None:  # the renderer looks the class up on this module when it is built
            gl_module.GLContext = headless
        return mujoco.Renderer(model, height=height, width=width)
    except Exception as err:  # noqa: BLE001 - GL start-up fails in many platform-specific ways
        detail = " ".join(str(err).split())
        raise ConfigError(f"cannot start offscreen OpenGL ({detail}); install {GL_PACKAGES}") from None
    finally:
        if headless is not None:
            gl_module.GLContext = saved


class HumanoidFilm:
    """Renders frames of the humanoid (and optionally a translucent reference) with a camera following the pelvis.

    Args:
        width: frame width in pixels.
        height: frame height in pixels.
        distance: camera distance from the pelvis, metres.
        azimuth: camera azimuth in degrees (MuJoCo convention; the humanoid faces +x at rest).
        elevation: camera elevation in degrees (negative looks down).
        ghost_offset: where the reference humanoid is drawn relative to its true position, metres (``(0, 0, 0)``:
            overlaid; e.g. ``(0, 1.2, 0)``: beside).
    """

    def __init__(
        self,
        width: int = 480,
        height: int = 360,
        distance: float = 3.2,
        azimuth: float = 135.0,
        elevation: float = -12.0,
        ghost_offset: Sequence[float] = (0.0, 0.0, 0.0),
    ) -> None:
        self.model = load_model()
        # The MJCF's single overhead light leaves the floor dark from a side view: add a soft headlight.
        self.model.vis.headlight.ambient[:] = (0.35, 0.35, 0.35)
        self.model.vis.headlight.diffuse[:] = (0.55, 0.55, 0.55)
        self.renderer = make_renderer(self.model, width, height)
        self.data = mujoco.MjData(self.model)
        self.ghost = mujoco.MjData(self.model)
        self.camera = mujoco.MjvCamera()
        self.camera.type = mujoco.mjtCamera.mjCAMERA_FREE
        self.camera.distance = distance
        self.camera.azimuth = azimuth
        self.camera.elevation = elevation
        self.ghost_offset = np.asarray(ghost_offset, dtype=np.float64)
        self._option = mujoco.MjvOption()
        self._perturb = mujoco.MjvPerturb()

    def frame(self, qpos: np.ndarray, ghost_qpos: Optional[np.ndarray] = None) -> np.ndarray:
        """One ``[H, W, 3]`` uint8 picture of ``qpos`` (``[nq]``), with the reference ``ghost_qpos`` if given."""
        self.data.qpos[:] = qpos
        mujoco.mj_kinematics(self.model, self.data)
        lookat = self.data.qpos[:3].copy()
        if ghost_qpos is not None:  # keep both humanoids in view
            lookat = 0.5 * (lookat + ghost_qpos[:3] + self.ghost_offset)
        lookat[2] = 0.9  # a steady horizon: follow the pelvis over the ground, not up and down
        self.camera.lookat[:] = lookat
        self.renderer.update_scene(self.data, self.camera)
        if ghost_qpos is not None:
            self._add_ghost(ghost_qpos)
        return self.renderer.render().copy()

    def _add_ghost(self, qpos: np.ndarray) -> None:
        self.ghost.qpos[:] = qpos
        mujoco.mj_kinematics(self.model, self.ghost)
        scene = self.renderer.scene
        first = scene.ngeom
        mujoco.mjv_addGeoms(self.model, self.ghost, self._option, self._perturb, mujoco.mjtCatBit.mjCAT_DYNAMIC, scene)
        for i in range(first, scene.ngeom):
            geom = scene.geoms[i]
            geom.rgba[:] = GHOST_RGBA
            geom.pos[:] = geom.pos + self.ghost_offset

    def close(self) -> None:
        """Free the GL context."""
        self.renderer.close()


def check_video_path(path: str) -> Path:
    """``path`` as a Path after checking its suffix is a supported video format.

    Raises:
        ConfigError: neither ``.gif`` nor ``.mp4``.
    """
    out = Path(path)
    if out.suffix.lower() not in VIDEO_SUFFIXES:
        raise ConfigError(f"{out}: the video must end in .gif or .mp4")
    return out


def write_video(path: Path, frames: Iterable[np.ndarray], fps: float) -> int:
    """Write ``[H, W, 3]`` uint8 frames as a looping GIF or an H.264 MP4; returns the number of frames."""
    import imageio  # lazy: only the render verbs need it

    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".gif":
        pictures = list(frames)
        if pictures:  # pillow's GIF writer: duration per frame in milliseconds
            imageio.v3.imwrite(path, np.stack(pictures), plugin="pillow", duration=1000.0 / fps, loop=0)
        return len(pictures)
    count = 0
    with imageio.v2.get_writer(path, format="FFMPEG", fps=fps, codec="libx264", macro_block_size=8) as writer:
        for picture in frames:
            writer.append_data(picture)
            count += 1
    return count


def every_nth(frames: Sequence[Any], source_fps: float, fps: float) -> Iterator[Any]:
    """Frames of a ``source_fps`` sequence picked at ``fps`` (nearest earlier frame; never faster than the source)."""
    step = max(source_fps / fps, 1.0)
    t = 0.0
    while int(t) < len(frames):
        yield frames[int(t)]
        t += step
