"""Data-parallel training on CPU (gloo): gradient averaging, the drift check, and torchrun end to end."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from recurrent_ppo import distributed

ROOT = Path(__file__).resolve().parents[1]


def _two_ranks(rank: int, store: str, results: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    group = distributed.Group(rank, 2, rank)
    try:
        torch.manual_seed(rank)  # different weights on each rank, until the broadcast
        module = torch.nn.Linear(3, 2)
        distributed.broadcast_module(module, group)
        distributed.check_in_sync(module, group)  # equal after the broadcast: no error
        for param in module.parameters():
            param.grad = torch.full_like(param, float(rank + 1))
        module.bias.grad = None if rank == 1 else module.bias.grad  # a missing gradient counts as zeros
        distributed.average_gradients(module.parameters(), group)
        grads = [param.grad.clone() for param in module.parameters()]
        weights = module.weight.detach().clone()
        if rank == 1:
            with torch.no_grad():
                module.weight[0, 0] += 0.5
        try:
            distributed.check_in_sync(module, group)
            drift_error = None
        except RuntimeError as error:
            drift_error = str(error)
        torch.save({"grads": grads, "weights": weights, "drift_error": drift_error}, f"{results}.{rank}")
    finally:
        dist.destroy_process_group()


def test_gradients_average_and_drift_is_caught(tmp_path):
    mp.spawn(_two_ranks, args=(str(tmp_path / "store"), str(tmp_path / "result")), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"result.{rank}") for rank in range(2)]
    assert torch.equal(ranks[0]["weights"], ranks[1]["weights"]), "rank 0's weights were broadcast"
    for rank in ranks:
        weight_grad, bias_grad = rank["grads"]
        assert torch.equal(weight_grad, torch.full_like(weight_grad, 1.5))  # (1 + 2) / 2
        assert torch.equal(bias_grad, torch.full_like(bias_grad, 0.5))  # (1 + 0) / 2
        assert rank["drift_error"] is not None and "drifted apart" in rank["drift_error"]


@pytest.mark.slow(seconds=13)
def test_torchrun_trains_two_processes_and_rank_zero_reports(tmp_path):
    # Compiled (aot_eager: Dynamo's and AOTAutograd's graphs without inductor's codegen): the gradient averaging,
    # broadcast and drift check run outside the compiled graphs, the same code as an eager run's.
    compile_args = ["--compile-mode", "default", "--compile-backend", "aot_eager"]
    run = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "TRITON_INTERPRET")}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
         "recurrent_ppo", "train", "--device", "cpu", "--num-envs", "4", "--num-steps", "16", "--seq-len", "4",
         "--total-steps", "256", "--hidden-dim", "8", "--num-minibatches", "2", "--update-epochs", "1",
         "--eval-episodes", "4", "--no-progress", "--run-dir", str(run), *compile_args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("trained 256 steps") == 1, proc.stdout  # rank 0 alone reports
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["global_step"] for row in rows] == [128, 256]  # 2 processes x 4 envs x 16 steps per iteration
    assert json.loads((run / "config.json").read_text())["world_size"] == 2
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and "eval_return_mean" in summary
    assert len(list(run.glob("events.out.tfevents.*"))) == 1
