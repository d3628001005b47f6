"""The calibration workload timed as a benchmark of its own (benchlib.calibration_workload): its change against
the baseline is the machine's speed today. bench/check.py compares every other benchmark relative to the same
workload timed between that benchmark's own rounds, so a machine slower today, or for a while during the run,
does not fail the gate.
"""

from __future__ import annotations

import pytest
import torch

import benchlib

pytestmark = pytest.mark.benchmark(group="calibration")


def test_calibration(benchmark, profile):
    cfg = profile.train
    device = torch.device(profile.device)
    benchlib.fresh_state()
    benchmark.extra_info.update(num_envs=cfg.num_envs, hidden_dim=cfg.hidden_dim, num_steps=cfg.num_steps)
    benchlib.measure(benchmark, benchlib.calibration_workload(profile, device), device=device, profile=profile,
                     warmup=2, compiled=False, items=cfg.num_envs * cfg.num_steps)
