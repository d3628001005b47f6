"""`recurrent-ppo profile`: a tiny traced run writes a Perfetto-readable trace and a consistent breakdown."""

import json
from types import SimpleNamespace

import pytest
from torch.autograd import DeviceType

from recurrent_ppo.config import TrainConfig
from recurrent_ppo.cli import Profile, help_text, main, parse, profile_command
from recurrent_ppo.profiling import PHASES, format_breakdown, summarize

TINY = ["--num-envs", "4", "--num-steps", "16", "--seq-len", "4", "--hidden-dim", "8", "--num-minibatches", "2",
        "--update-epochs", "2", "--total-steps", "256", "--device", "cpu", "--compile-mode", "off"]


def parse_profile(argv: list[str]) -> Profile:
    args, _ = parse(["profile", *argv])
    assert isinstance(args, Profile)
    return args


def run_profile(out, capsys, *flags: str) -> str:
    assert profile_command(parse_profile([*TINY, "--wait", "1", "--warmup", "1", "--active", "1", "--out", str(out),
                                  *flags])) == 0
    return capsys.readouterr().out


def test_trace_holds_the_phase_ranges_and_breakdown_adds_up(tmp_path, capsys):
    out = tmp_path / "run"
    printed = run_profile(out, capsys)

    trace = json.loads((out / "trace.json").read_text())
    names = [event.get("name") for event in trace["traceEvents"]]
    for phase in PHASES:
        assert names.count(phase) == 1, f"one traced iteration must hold exactly one {phase!r} range"
    assert sum(str(name).startswith("ProfilerStep#") for name in names) == 1, "wait/warmup steps must not be traced"

    breakdown = json.loads((out / "breakdown.json").read_text())
    phases = breakdown["phases"]
    assert list(phases) == [*PHASES, "other"]
    assert sum(p["share"] for p in phases.values()) == pytest.approx(1.0, abs=1e-6)
    assert all(p["host_s"] >= 0 for p in phases.values()), phases
    assert phases["rollout"]["host_s"] > 0 and phases["update"]["host_s"] > 0
    assert breakdown["top_ops_by"] == "self CPU time"
    ops = breakdown["top_ops"]
    assert ops and all(op["seconds"] > 0 and op["calls"] >= 1 for op in ops)
    assert [op["seconds"] for op in ops] == sorted((op["seconds"] for op in ops), reverse=True)
    assert not {op["name"] for op in ops} & set(PHASES), "phase ranges frame the ops; they are not ops"
    assert any(op["name"].startswith("aten::") for op in ops)
    assert breakdown["schedule"] == {"wait": 1, "warmup": 1, "active": 1}
    assert len(breakdown["untraced_step_s"]) == 2
    assert breakdown["config"]["num_envs"] == 4

    for phase in (*PHASES, "other"):
        assert f"\n{phase} " in printed, f"the printed breakdown must name the {phase!r} phase"
    assert "top ops by self CPU time" in printed
    assert str(out / "trace.json") in printed


def test_several_active_steps_are_all_counted(tmp_path, capsys):
    out = tmp_path / "run"
    run_profile(out, capsys, "--wait", "0", "--active", "2", "--top", "3")
    breakdown = json.loads((out / "breakdown.json").read_text())
    assert breakdown["active_steps"] == 2 and len(breakdown["untraced_step_s"]) == 1
    assert len(breakdown["top_ops"]) == 3
    names = [event.get("name") for event in json.loads((out / "trace.json").read_text())["traceEvents"]]
    assert names.count("update") == 2


@pytest.mark.parametrize("flags,message", [
    (["--active", "0"], "active=0 must be >= 1"),
    (["--wait", "-1"], "wait=-1 must be >= 0"),
    (["--active", "3"], "needs total_steps >= 320 (5 x num_envs * num_steps = 64); got total_steps=256"),
    (["--seq-len", "5"], "seq_len=5 must divide num_steps=16"),
    (["--top", "0"], "top=0 must be >= 1"),
])
def test_invalid_settings_fail_before_any_work(tmp_path, capsys, flags, message):
    out = tmp_path / "run"
    assert main(["profile", *TINY, "--out", str(out), *flags]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists(), "nothing may be written for an invalid configuration"


def test_every_train_flag_is_accepted():
    text = help_text("profile")
    for name in TrainConfig.__dataclass_fields__:
        assert "--" + name.replace("_", "-") in text, name
    args = parse_profile(["--preset", "cartpole", "--no-anneal-lr", "--learning-rate", "1e-4"])
    assert (args.preset, args.config.env, args.config.anneal_lr, args.config.learning_rate) == (
        "cartpole", "cartpole", False, 1e-4)
    assert (args.wait, args.warmup, args.active) == (1, 1, 2)


def fake_event(name, device_type=DeviceType.CPU, *, us=0.0, start=0.0, annotation=False):
    """The FunctionEvent fields summarize reads; lets the CUDA branch be checked without a GPU."""
    return SimpleNamespace(name=name, device_type=device_type, is_async=False, is_user_annotation=annotation,
                           cpu_time_total=us if device_type == DeviceType.CPU else 0.0, self_cpu_time_total=us,
                           time_range=SimpleNamespace(start=start, end=start + us, elapsed_us=lambda: us))


def test_cuda_breakdown_ranks_kernels_and_skips_gpu_copies_of_ranges():
    cuda = DeviceType.CUDA
    events = [
        fake_event("ProfilerStep*", us=1000, annotation=True),
        fake_event("rollout", us=600, annotation=True),
        fake_event("gae", us=100, annotation=True),
        fake_event("update", us=200, annotation=True),
        fake_event("Optimizer.step#Adam.step", us=50, annotation=True),
        # The phase ranges mirrored on the GPU timeline: spans over the kernels launched in them.
        fake_event("rollout", cuda, start=1000, us=400, annotation=True),
        fake_event("gae", cuda, start=1500, us=60, annotation=True),
        fake_event("update", cuda, start=1600, us=300, annotation=True),
        fake_event("Optimizer.step#Adam.step", cuda, start=1700, us=40),  # a mirror not flagged as an annotation
        fake_event("lstm_kernel", cuda, start=1000, us=300),  # e.g. a CUDA-graph replay's kernel, tied to no op
        fake_event("gae_kernel", cuda, start=1500, us=50),
        fake_event("adam_kernel", cuda, start=1700, us=100),
        fake_event("adam_kernel", cuda, start=1800, us=60),
        fake_event("stray_kernel", cuda, start=2000, us=10),  # in no phase's span
    ]
    breakdown = summarize(events, active=1, on_device=True, top=10)
    phases = breakdown["phases"]
    assert phases["other"]["host_s"] == pytest.approx(100e-6)
    assert phases["rollout"]["share"] == pytest.approx(0.6)
    assert phases["rollout"]["device_s"] == pytest.approx(300e-6)
    assert phases["gae"]["device_s"] == pytest.approx(50e-6)
    assert phases["update"]["device_s"] == pytest.approx(160e-6)
    assert phases["other"]["device_s"] == pytest.approx(10e-6), "kernels outside the phases' spans"
    assert breakdown["top_ops_by"] == "device time"
    assert [(op["name"], op["calls"]) for op in breakdown["top_ops"]] == [
        ("lstm_kernel", 1), ("adam_kernel", 2), ("gae_kernel", 1), ("stray_kernel", 1)]
    printed = format_breakdown(breakdown)
    assert "device ms/iter" in printed and "top kernels by device time" in printed


def test_missing_phase_range_fails_loud():
    events = [fake_event("ProfilerStep*", us=1000), fake_event("rollout", us=600), fake_event("update", us=300)]
    with pytest.raises(RuntimeError, match="expected 1 'gae' ranges in the trace, found 0"):
        summarize(events, active=1, on_device=False, top=5)
