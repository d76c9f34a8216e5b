"""Raw MuJoCo stepping, the baseline of ``phc bench env``."""

from phc_lightning.bench.raw_physics import raw_physics_steps_per_second


def test_raw_physics_benchmark_reports_a_rate():
    assert raw_physics_steps_per_second(2, substeps=2, num_steps=2, num_threads=1) > 0
