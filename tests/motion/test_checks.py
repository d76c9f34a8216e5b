"""``phc motions validate``: a 20 cm floor penetration and a NaN frame are flagged per motion, exit code 1."""

from __future__ import annotations

from pathlib import Path
from typing import List

import numpy as np
import pytest

from phc_lightning.cli import main
from phc_lightning.motion import BUNDLED_MOTIONS
from phc_lightning.motion.amass import place_on_floor
from phc_lightning.motion.checks import validate_file
from phc_lightning.motion.formats import FORMAT_MAGIC, FORMAT_VERSION, load_motion_file
from phc_lightning.motion.raw_motion import RawMotion
from phc_lightning.motion.summary import length_histogram


def write_unchecked(path: Path, motions: List[RawMotion]) -> None:
    """A native file written without the writer's validation (so it can hold a NaN frame)."""
    np.savez(
        path,
        format=np.array(FORMAT_MAGIC),
        version=np.array(FORMAT_VERSION, dtype=np.int64),
        keys=np.array([m.key for m in motions]),
        fps=np.array([m.fps for m in motions], dtype=np.float32),
        num_frames=np.array([m.num_frames for m in motions], dtype=np.int64),
        root_pos=np.concatenate([m.root_pos for m in motions]),
        global_rot=np.concatenate([m.global_rot for m in motions]),
    )


@pytest.fixture()
def bad_file(tmp_path: Path) -> Path:
    walk = place_on_floor(next(m for m in load_motion_file(BUNDLED_MOTIONS) if m.key == "walk"))
    sink = RawMotion("sink", walk.fps, walk.root_pos.copy(), walk.global_rot.copy())
    sink.root_pos[40:45, 2] -= 0.20  # the whole body 20 cm into the floor for five frames (slowly: no spike)
    sink.root_pos[38:40, 2] -= (0.07, 0.14)
    sink.root_pos[45:47, 2] -= (0.14, 0.07)
    broken = RawMotion("broken", walk.fps, walk.root_pos.copy(), walk.global_rot.copy())
    broken.root_pos[12, 0] = np.nan
    path = tmp_path / "motions.npz"
    write_unchecked(path, [walk, sink, broken])
    return path


def test_validate_flags_penetration_and_nan_with_exit_code_1(bad_file: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["motions", "validate", str(bad_file)])
    assert exit_info.value.code == 1
    lines = capsys.readouterr().out.strip().splitlines()
    problems = [line for line in lines if not line.startswith("warning:")][:-1]  # last line: the summary
    assert len(problems) == 2, lines
    sink = next(line for line in problems if "'sink'" in line)
    assert str(bad_file) in sink and "below the floor" in sink and "frame 4" in sink
    depth = float(sink.split(" is ")[1].split(" m ")[0])
    assert 0.17 < depth < 0.23
    broken = next(line for line in problems if "'broken'" in line)
    assert "NaN" in broken and "frame 12" in broken
    assert "3 motion(s) checked, 2 error(s) in 2 motion(s)" in lines[-1]


def test_velocity_spike_and_short_motion_are_errors(tmp_path: Path) -> None:
    walk = next(m for m in load_motion_file(BUNDLED_MOTIONS) if m.key == "walk")
    pop = RawMotion("pop", walk.fps, walk.root_pos.copy(), walk.global_rot.copy())
    pop.root_pos[30, 1] += 0.6  # an 18 m/s mocap pop
    short = RawMotion("short", walk.fps, walk.root_pos[:4].copy(), walk.global_rot[:4].copy())
    path = tmp_path / "m.npz"
    write_unchecked(path, [pop, short])
    messages = {p.key: p.message for p in validate_file(path) if p.severity == "error"}
    assert "velocity spike" in messages["pop"] and "m/s between frames" in messages["pop"]
    assert "frames 29 and 30" in messages["pop"] or "frames 30 and 31" in messages["pop"]
    assert "only 4 frames" in messages["short"]


def test_bundled_motions_pass_with_hinge_warnings_only(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["motions", "validate", BUNDLED_MOTIONS])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "0 error(s)" in out and "warning: " in out and "'squat'" in out  # deep knee bend near 90 degrees


def test_missing_file_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["motions", "validate", str(tmp_path / "nope.npz")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == f"phc: error: {tmp_path / 'nope.npz'}: no such file"


def test_info_prints_totals_fps_and_length_histogram(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["motions", "info", BUNDLED_MOTIONS])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "7 motions, 1027 frames, 34.0 s" in out and "fps: 30 (7 motions)" in out and "length histogram" in out
    assert length_histogram([1.0, 2.0, 4.9, 100.0]) == [
        ("< 2 s", 1), ("2-5 s", 2), ("5-10 s", 0), ("10-30 s", 0), ("30-60 s", 0), (">= 60 s", 1)
    ]  # fmt: skip
