"""Run logs: TensorBoard scalars written by training match metrics.jsonl, read back with TensorBoard's reader."""

import json
import math

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from recurrent_ppo import trainer as trainer_module
from recurrent_ppo.config import TrainConfig
from recurrent_ppo.runlog import RunLogger
from recurrent_ppo.trainer import Trainer


def small_config(tmp_path, **changes):
    base = TrainConfig(num_envs=4, num_steps=16, seq_len=4, total_steps=4 * 16 * 2, hidden_dim=8,
                       num_minibatches=2, update_epochs=2, eval_episodes=0, progress=False,
                       run_dir=str(tmp_path / "run"), device="cpu", compile_mode="off")
    return base.replace(**changes)


def read_jsonl(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def read_scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def assert_same_points(actual, expected, tag):
    assert [step for step, _ in actual] == [step for step, _ in expected], f"steps of {tag!r}"
    # Event files store float32; NaN (no episode finished yet) must stay NaN.
    assert [v for _, v in actual] == pytest.approx([v for _, v in expected], rel=1e-6, nan_ok=True), tag


def test_training_writes_every_numeric_metric_to_tensorboard_at_its_global_step(tmp_path):
    Trainer(small_config(tmp_path)).train()
    run = tmp_path / "run"
    rows = read_jsonl(run)
    scalars = read_scalars(run)
    assert [r["global_step"] for r in rows] == [64, 128]
    metric_keys = set(rows[0]) - {"iteration", "global_step"}
    assert {"episode_return_mean", "sps", "sps_overall", "loss", "approx_kl", "learning_rate"} <= metric_keys
    assert set(scalars) == metric_keys
    assert not any(tag.startswith("gpu_") for tag in scalars), "a CPU run has no GPU telemetry"
    for tag in metric_keys:
        assert_same_points(scalars[tag], [(r["global_step"], r[tag]) for r in rows], tag)
    assert len(list(run.glob("events.out.tfevents.*"))) == 1


class StubTelemetry:
    """Stands in for GPUTelemetry: a fixed reading, and a record of how the trainer drove it."""

    instances: list["StubTelemetry"] = []

    def __init__(self, device_index, period_s=1.0):
        self.device_index, self.events = device_index, []
        StubTelemetry.instances.append(self)

    def __enter__(self):
        self.events.append("start")
        return self

    def __exit__(self, *exc):
        self.events.append("stop")

    def latest(self):
        self.events.append("latest")
        return {"gpu_util_pct": 93.0, "gpu_power_w": 301.5}


def test_telemetry_readings_join_each_record_and_the_scalars(tmp_path, monkeypatch):
    StubTelemetry.instances.clear()
    monkeypatch.setattr(trainer_module, "GPUTelemetry", StubTelemetry)
    Trainer(small_config(tmp_path)).train()
    run = tmp_path / "run"
    (stub,) = StubTelemetry.instances
    assert stub.device_index is None, "a CPU device has no CUDA index"
    assert stub.events == ["start", "latest", "latest", "stop"]
    rows = read_jsonl(run)
    assert all(r["gpu_util_pct"] == 93.0 and r["gpu_power_w"] == 301.5 for r in rows)
    scalars = read_scalars(run)
    assert scalars["gpu_util_pct"] == [(64, 93.0), (128, 93.0)]
    assert scalars["gpu_power_w"] == [(64, 301.5), (128, 301.5)]


def test_reopening_a_run_dir_starts_both_logs_afresh(tmp_path):
    with RunLogger(tmp_path) as log:
        log.write({"global_step": 10, "loss": 1.0})
        log.write({"global_step": 20, "loss": 2.0})
    with RunLogger(tmp_path) as log:
        log.write({"global_step": 5, "loss": 0.5, "episode_return_mean": math.nan, "flag": True, "note": "text"})
    (row,) = read_jsonl(tmp_path)
    assert math.isnan(row.pop("episode_return_mean"))
    assert row == {"global_step": 5, "loss": 0.5, "flag": True, "note": "text"}
    scalars = read_scalars(tmp_path)
    assert set(scalars) == {"loss", "episode_return_mean"}, "bools and strings are not scalars"
    assert scalars["loss"] == [(5, 0.5)], "the earlier run's points are gone"
    assert math.isnan(scalars["episode_return_mean"][0][1])


def test_a_record_without_global_step_is_rejected(tmp_path):
    with RunLogger(tmp_path) as log, pytest.raises(ValueError, match="needs an int 'global_step'"):
        log.write({"loss": 1.0})


def test_a_resume_in_the_same_second_still_hides_the_killed_runs_points(tmp_path, monkeypatch):
    # TensorBoard reads event files in name order, and the name's last part is a per-process counter, unpadded:
    # the 10th file of a process sorts before its 9th. A resume in the same process and second must still win.
    from tensorboard.summary.writer import event_file_writer

    monkeypatch.setattr(event_file_writer, "_global_uid", event_file_writer.AtomicCounter(9))
    with RunLogger(tmp_path) as log:
        for iteration in range(3):
            log.write({"iteration": iteration, "global_step": 10 * (iteration + 1), "loss": float(iteration)})
    with RunLogger(tmp_path, resume_after=(1, 10)) as log:
        log.write({"iteration": 1, "global_step": 20, "loss": 11.0})
    names = sorted(p.name for p in tmp_path.glob("events.out.tfevents.*"))
    assert [name.rsplit(".", 1)[1] for name in names] == ["9", "10"], names
    assert read_scalars(tmp_path)["loss"] == [(10, 0.0), (20, 11.0)]


def test_resuming_cuts_both_logs_back_to_the_checkpoint(tmp_path):
    with RunLogger(tmp_path) as log:
        for iteration in range(5):  # checkpointed after 3 iterations, then killed after 5
            log.write({"iteration": iteration, "global_step": 10 * (iteration + 1), "loss": float(iteration),
                       "time": 1.5 * (iteration + 1)})
    with RunLogger(tmp_path, resume_after=(3, 30)) as log:
        assert log.elapsed == 4.5, "time goes on from the last kept record"
        for iteration in (3, 4):
            log.write({"iteration": iteration, "global_step": 10 * (iteration + 1), "loss": 10.0 + iteration,
                       "time": 5.0 + iteration})
    rows = read_jsonl(tmp_path)
    assert [row["iteration"] for row in rows] == [0, 1, 2, 3, 4], "no iteration logged twice"
    assert [row["loss"] for row in rows] == [0.0, 1.0, 2.0, 13.0, 14.0]
    assert read_scalars(tmp_path)["loss"] == [(10, 0.0), (20, 1.0), (30, 2.0), (40, 13.0), (50, 14.0)], \
        "TensorBoard hides the killed run's points past the checkpoint"
    assert not list(tmp_path.glob("*.partial"))
