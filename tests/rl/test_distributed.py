"""Several processes train one policy (Lightning DDP on CPU, gloo): identical ranks, all steps counted, evaluation
split and gathered, exact resume, failures that end the run.

Lightning's DDP launcher re-runs the command for the other ranks, so every run here is a ``python -m
phc_lightning.cli`` subprocess in a temporary folder.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import pytest
import torch

from phc_lightning.rl import distributed
from phc_lightning.rl.normalization import RunningNorm
from phc_lightning.run.directory import LAYOUT_ENV
from tests.helpers import SMOKE, checkout_env

DDP2 = ("--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp")
PROBE = "--trainer.callbacks+=tests.ddp_probes.SyncProbe"
STEPS = 8 * 16  # smoke: num_envs x horizon of one process


def env() -> Dict[str, str]:
    return checkout_env({k: v for k, v in os.environ.items() if k != LAYOUT_ENV})


def phc(cwd: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    cwd.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([sys.executable, "-m", "phc_lightning.cli", *args], cwd=cwd, env=env(),
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def fit2(cwd: Path, max_epochs: int, *extra: str) -> Path:
    phc(cwd, "fit", "--config", SMOKE, *DDP2, "--trainer.max_epochs", str(max_epochs), *extra)
    return cwd / "runs" / "smoke" / "version_0"


def motion_rows(path: Path) -> List[Dict[str, str]]:
    return list(csv.DictReader(path.open()))


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cwd = tmp_path_factory.mktemp("ddp")
    run = fit2(cwd, 3, PROBE, "--trainer.callbacks.out", str(cwd / "probe.jsonl"))
    return run


@pytest.mark.slow
def test_two_processes_stay_identical_and_count_both_ranks_steps(two_process_run: Path) -> None:
    records = [json.loads(line) for line in (two_process_run.parents[2] / "probe.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1, 2]
    for r in records:
        assert r["world_size"] == 2
        assert r["params_equal"] and r["norm_equal"], r  # after every iteration, before the next forward
        assert r["envs_differ"], r  # each rank its own seeds
        assert r["data_states"] == [2, 0], r  # only rank 0, the checkpoint's writer, receives the ranks' data states
        # the counter (identical on both ranks) is both ranks' steps together
        assert r["env_steps"] == [sum(r["collected"])] * 2 == [2 * STEPS * (r["epoch"] + 1)] * 2
        # the normalizer saw every transition of both ranks once (no reset observations on top, also not after a
        # MotionResampling)
        assert r["norm_count"] == sum(r["collected"]), r
    # one run directory, written by rank 0 only; the checkpoint holds both ranks' data state
    assert sorted(p.name for p in two_process_run.parent.iterdir()) == ["version_0"]
    ckpt = torch.load(two_process_run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["PHCDataModule"]["world_size"] == 2 and len(ckpt["PHCDataModule"]["ranks"]) == 2
    assert int(ckpt["state_dict"]["env_steps"]) == 3 * 2 * STEPS
    # the evaluations during fit cover every motion once
    for name in ("epoch00001_motions.csv", "final_motions.csv"):
        ids = [int(row["motion_id"]) for row in motion_rows(two_process_run / "eval" / name)]
        assert ids == list(range(7)), (name, ids)  # the bundled synthetic motions


LSTM_FLAGS = ("--model.recurrent", "both", "--model.lstm_hidden", "16")


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["amp", "lstm"])
def test_amp_and_lstm_runs_train_identically_in_two_processes_and_validate(tmp_path: Path, variant: str) -> None:
    from tests.amp.test_fit import AMP_FLAGS

    probe = tmp_path / "probe.jsonl"
    run = fit2(tmp_path, 2, PROBE, "--trainer.callbacks.out", str(probe),
               *(AMP_FLAGS if variant == "amp" else LSTM_FLAGS))
    records = [json.loads(line) for line in probe.read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1]
    for r in records:  # every parameter (with AMP the discriminator's too) and normalizer, after every iteration
        assert r["params_equal"] and r["norm_equal"] and r["envs_differ"], r
        assert r["env_steps"] == [2 * STEPS * (r["epoch"] + 1)] * 2
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    ranks = ckpt["PHCDataModule"]["ranks"]
    assert len(ranks) == 2
    if variant == "amp":
        assert any(k.startswith("discriminator.") for k in ckpt["state_dict"])
        assert all(rank["rollout"]["amp"]["frames"] is not None for rank in ranks)
    else:
        assert ckpt["hyper_parameters"]["recurrent"] == "both"
    # the evaluation during fit (epoch 1) covered every motion once, and the checkpoint validates
    ids = [int(row["motion_id"]) for row in motion_rows(run / "eval" / "epoch00001_motions.csv")]
    assert ids == list(range(7))
    phc(tmp_path, "validate", "--config", SMOKE, "--trainer.accelerator", "cpu", "--ckpt_path",
        str(run / "checkpoints" / "last.ckpt"))
    assert json.loads((run / "eval" / "validate_summary.json").read_text())["num_motions"] == 7


CRITIC_FLAGS = ("--model.critic_full_update", "true", "--model.target_kl", "1e-9")  # the KL stop after minibatch 1


@pytest.mark.slow
def test_critic_steps_after_the_kl_stop_train_identically_in_two_processes(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "phc_lightning.cli", "fit", "--config", SMOKE, *DDP2, "--trainer.max_epochs", "1",
           *CRITIC_FLAGS]
    refused = subprocess.run(cmd, cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0
    assert "model.critic_full_update" in refused.stderr and "ddp_find_unused_parameters_true" in refused.stderr
    probe = tmp_path / "probe.jsonl"
    fit2(tmp_path / "run", 2, PROBE, "--trainer.callbacks.out", str(probe), *CRITIC_FLAGS,
         "--trainer.strategy", "ddp_find_unused_parameters_true")
    records = [json.loads(line) for line in probe.read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1]
    for r in records:  # the critic's own steps all-reduced too: every parameter equal after every iteration
        assert r["params_equal"] and r["norm_equal"], r


@pytest.mark.slow
def test_two_process_evaluation_equals_one_process(two_process_run: Path) -> None:
    ckpt = str(two_process_run / "checkpoints" / "last.ckpt")
    cwd = two_process_run.parents[2]
    out = {}
    for devices in ("2", "1"):
        phc(cwd, "validate", "--config", SMOKE, "--trainer.accelerator", "cpu", "--trainer.devices", devices,
            "--trainer.strategy", "ddp" if devices == "2" else "auto", "--ckpt_path", ckpt)
        out[devices] = (motion_rows(two_process_run / "eval" / "validate_motions.csv"),
                        json.loads((two_process_run / "eval" / "validate_summary.json").read_text()))
    rows2, summary2 = out["2"]
    rows1, summary1 = out["1"]
    assert [int(r["motion_id"]) for r in rows2] == list(range(7))
    # same motions, outcomes and steps; the errors agree to float rounding (each motion runs in another env slot
    # and batch of the policy's matmuls, which may round the last bits differently)
    for r2, r1 in zip(rows2, rows1):
        exact = ("motion_id", "key", "frames", "frames_played", "success")
        assert {k: r2[k] for k in exact} == {k: r1[k] for k in exact}
        for key in ("mpjpe_g", "mpjpe_l", "mpjpe_pa"):
            assert float(r2[key]) == pytest.approx(float(r1[key]), abs=0.01), (key, r2, r1)
    assert len(rows2) == len(rows1)
    assert summary2["success_rate"] == summary1["success_rate"]
    assert summary2["num_motions"] == summary1["num_motions"] == 7
    for key in ("mpjpe_g", "mpjpe_l", "mpjpe_pa"):
        assert summary2[key] == pytest.approx(summary1[key], rel=1e-5)


@pytest.mark.slow
def test_two_process_resume_2_plus_2_equals_4_and_refuses_another_world_size(tmp_path: Path) -> None:
    straight = fit2(tmp_path / "straight", 4)
    fit2(tmp_path / "resumed", 2)
    resumed = fit2(tmp_path / "resumed", 4, "--ckpt_path", "last")
    a = torch.load(straight / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)
    assert int(a["state_dict"]["env_steps"]) == int(b["state_dict"]["env_steps"]) == 4 * 2 * STEPS
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, rtol=0, atol=0, msg=f"{key} differs")
    for rank in (0, 1):  # each rank's envs continued exactly too
        obs_a = a["PHCDataModule"]["ranks"][rank]["env"]["obs"]
        torch.testing.assert_close(b["PHCDataModule"]["ranks"][rank]["env"]["obs"], obs_a, rtol=0, atol=0)

    one = subprocess.run([sys.executable, "-m", "phc_lightning.cli", "fit", "--config", SMOKE,
                          "--trainer.max_epochs", "6", "--ckpt_path", "last"], cwd=tmp_path / "resumed", env=env(),
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 2
    assert "Traceback" not in one.stderr
    assert "phc: error: --ckpt_path: the checkpoint's run trained with 2 process(es), this one has 1" in one.stderr


@pytest.mark.slow
@pytest.mark.parametrize("rank", [0, 1])
def test_a_rank_that_raises_ends_both_processes_with_its_error(tmp_path: Path, rank: int) -> None:
    marker = f"raise_{os.getpid()}_{rank}"
    cmd = [sys.executable, "-m", "phc_lightning.cli", "fit", "--config", SMOKE, *DDP2, "--trainer.max_epochs", "5",
           "--run_name", marker, "--trainer.callbacks+=tests.ddp_probes.RaiseOnRank",
           "--trainer.callbacks.rank", str(rank), "--trainer.callbacks.epoch", "1"]
    start = time.time()
    proc = subprocess.run(cmd, cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert f"injected failure on rank {rank}" in proc.stderr
    time.sleep(1)
    left = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout.split()
    assert not left, f"processes left behind: {left}"
    # the failure came at the start of epoch 1, after start-up and one iteration (~10 s here): no hang
    assert time.time() - start < 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_on_one_machine_train_and_stop_cleanly(tmp_path: Path) -> None:
    port = str(free_port())
    args = [sys.executable, "-m", "phc_lightning.cli", "fit", "--config", SMOKE, "--trainer.accelerator", "cpu",
            "--trainer.devices", "1", "--trainer.num_nodes", "2", "--trainer.strategy", "ddp",
            "--trainer.max_epochs", "2", "--run_name", "two_nodes"]
    procs = []
    for node in ("0", "1"):
        node_env = dict(env(), MASTER_ADDR="127.0.0.1", MASTER_PORT=port, NODE_RANK=node, WORLD_SIZE="2")
        procs.append(subprocess.Popen(args, cwd=tmp_path, env=node_env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    run = tmp_path / "runs" / "smoke" / "two_nodes"
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert int(ckpt["state_dict"]["env_steps"]) == 2 * 2 * STEPS
    assert sorted(p.name for p in run.parent.iterdir()) == ["two_nodes"]


def test_merging_rank_summaries_equals_one_normalizer_over_all_data() -> None:
    torch.manual_seed(0)
    parts = [torch.randn(n, 5) * (i + 1) + i for i, n in enumerate((7, 13, 1))]
    one = RunningNorm(5)
    one.update(torch.cat(parts))
    merged = RunningNorm(5)
    count, mean, var = distributed.combine_moments([distributed.batch_moments(p) for p in parts])
    merged.merge(count, mean.float(), var.float())
    assert int(merged.count) == int(one.count) == 21
    torch.testing.assert_close(merged.mean, one.mean)
    torch.testing.assert_close(merged.var, one.var)


def test_one_merge_serves_the_normalizer_and_the_rank_combination() -> None:
    from phc_lightning.rl.normalization import merge_moments

    torch.manual_seed(1)
    a, b = torch.randn(9, 3, dtype=torch.float64) * 2 + 1, torch.randn(4, 3, dtype=torch.float64) - 3
    count, mean, var = merge_moments(*distributed.batch_moments(a), *distributed.batch_moments(b))
    whole_var, whole_mean = torch.var_mean(torch.cat([a, b]), dim=0, correction=0)
    assert count == 13
    torch.testing.assert_close(mean, whole_mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(var, whole_var, rtol=1e-12, atol=1e-12)
    # the ranks' combination is that merge, in rank order
    assert distributed.combine_moments([distributed.batch_moments(a), (0, mean, var), distributed.batch_moments(b)])[
        0] == 13
    norm = RunningNorm(3)
    norm.update(a.float())
    norm.update(b.float())
    torch.testing.assert_close(norm.mean, whole_mean.float())
    torch.testing.assert_close(norm.var, whole_var.float())


@pytest.mark.slow
def test_two_processes_stream_their_own_resident_motions_and_resume_exactly(tmp_path: Path) -> None:
    from phc_lightning.motion.variations import lognormal_lengths, write_varied_motions

    motion_file = tmp_path / "twenty_four.npz"  # more motions than smoke.yaml's 8 envs: each rank streams
    write_varied_motions(motion_file, lognormal_lengths(24, hours=0.0, median_seconds=0.6, sigma=0.2,
                                                        bounds=(0.5, 0.8), seed=2), seed=2)
    data = ("--data.motion_file", str(motion_file))
    straight = fit2(tmp_path / "straight", 4, *data)
    fit2(tmp_path / "resumed", 2, *data)
    resumed = fit2(tmp_path / "resumed", 4, "--ckpt_path", "last", *data)
    a = torch.load(straight / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, rtol=0, atol=0, msg=f"{key} differs")
    ranks = a["PHCDataModule"]["ranks"]
    for rank in (0, 1):
        for key in ("obs", "motion_ids"):
            torch.testing.assert_close(b["PHCDataModule"]["ranks"][rank]["env"][key], ranks[rank]["env"][key],
                                       rtol=0, atol=0)
    # each rank trains on (and holds the buffers of) its own draw of the 24 motions
    assert not torch.equal(ranks[0]["env"]["motion_ids"], ranks[1]["env"]["motion_ids"])
