"""A killed run resumes bitwise as the uninterrupted one goes on: eager, compiled and with observation
normalization."""

import json
import signal
from pathlib import Path

import pytest
import torch

from recurrent_ppo.checkpoint import read_checkpoint
from recurrent_ppo.cli import main
from tests.helpers import TIMING, train_process, wait_for_checkpoint


def run_record(run_dir: Path) -> tuple[list[dict], dict[str, torch.Tensor]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rows = [{key: value for key, value in row.items() if key not in TIMING} for row in rows]
    return rows, read_checkpoint(run_dir)["policy"]

# Compiled through aot_eager: the same graphs as inductor's (Dynamo and AOTAutograd), whose in-place updates of
# the carried state are what a resume depends on, without three cold inductor compiles (one per process). The
# compiled run normalizes observations too: the normalizer's statistics are carried state the compiled step updates
# in place, and they are saved and restored by the code an eager run uses.
@pytest.mark.parametrize("mode,options", [
    pytest.param("off", (), id="eager", marks=pytest.mark.slow(seconds=7)),
    pytest.param("default", ("--compile-backend", "aot_eager", "--normalize-obs"), id="compiled-normalize-obs",
                 marks=pytest.mark.slow(seconds=17)),
])
def test_a_killed_run_resumes_bitwise_as_the_uninterrupted_one(tmp_path, mode, options):
    flags = ("--compile-mode", mode, "--total-steps", str(4 * 16 * 8), "--checkpoint-every", "3", "--no-progress",
             *options)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    uninterrupted = train_process(whole, *flags)
    assert uninterrupted.wait(timeout=600) == 0, uninterrupted.communicate()
    proc = train_process(killed, *flags)
    wait_for_checkpoint(proc, killed, 3)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert main(["train", "--resume", str(killed), "--no-progress"]) == 0
    (rows, weights), (resumed_rows, resumed_weights) = run_record(whole), run_record(killed)
    assert [row["iteration"] for row in resumed_rows] == list(range(8)), "each iteration logged once"
    assert resumed_rows == rows, "metrics after the resume equal the uninterrupted run's"
    for name, tensor in weights.items():
        assert torch.equal(resumed_weights[name], tensor), f"{name} differs after the resume"
    times = [json.loads(line)["time"] for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert times == sorted(times), "time goes on from the checkpoint"
