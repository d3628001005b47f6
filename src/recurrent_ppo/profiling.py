"""`recurrent-ppo profile`: trace steady-state training iterations with torch.profiler, report where time goes.

K = wait + warmup + active iterations of `Trainer.train_iteration` run under `schedule(wait, warmup, active)`:
the wait iterations pay for compilation untraced, the warmup ones let the profiler settle, and only the active
ones are recorded. Output, in one folder (profiles/<env>-<timestamp>/ or --out):

- trace.json: the Chrome trace of the active iterations (exported by the `on_trace_ready` handler with
  `prof.export_chrome_trace`), for https://ui.perfetto.dev or chrome://tracing;
- breakdown.json: seconds and share of traced time per phase (the trainer's "rollout", "gae" and "update"
  record_function ranges, plus the remainder as "other") and the top kernels by device time on CUDA, or the
  top ops by self CPU time on a CPU run.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, schedule

from recurrent_ppo.config import TrainConfig

PHASES = ("rollout", "gae", "update")
"""The record_function ranges Trainer.train_iteration wraps its phases in."""
TRACE_FILE = "trace.json"
BREAKDOWN_FILE = "breakdown.json"


@dataclass(frozen=True)
class ProfileSchedule:
    """How many training iterations torch.profiler skips, warms up on and records (see torch.profiler.schedule)."""

    wait: int = 1
    """Untraced iterations first; the first one pays for torch.compile."""
    warmup: int = 1
    """Iterations the profiler runs on but discards, so its start-up cost stays out of the trace."""
    active: int = 2
    """Iterations recorded in the trace and the breakdown."""

    @property
    def steps(self) -> int:
        """K, the training iterations the profile runs."""
        return self.wait + self.warmup + self.active

    def validate(self) -> ProfileSchedule:
        """Raise ValueError naming the first invalid count; returns self."""
        if self.active < 1:
            raise ValueError(f"active={self.active} must be >= 1: at least one iteration has to be traced")
        for name in ("wait", "warmup"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0")
        return self


def default_profile_dir(cfg: TrainConfig) -> Path:
    from recurrent_ppo.trainer import path_safe

    return Path("profiles") / f"{path_safe(cfg.env)}-{time.strftime('%Y%m%d-%H%M%S')}"


def check_fits(cfg: TrainConfig, sched: ProfileSchedule, world_size: int = 1) -> None:
    """Raise ValueError unless the config's run is at least K iterations long (of `world_size` processes).

    The profiled iterations are the first K of the configured run, so the learning-rate schedule is the one
    training uses; past the run's last iteration the annealed rate would turn negative.
    """
    per_iteration = cfg.batch_size * world_size
    if sched.steps > cfg.total_steps // per_iteration:
        raise ValueError(
            f"profiling {sched.steps} iterations (wait {sched.wait} + warmup {sched.warmup} + active "
            f"{sched.active}) needs total_steps >= {sched.steps * per_iteration:,} ({sched.steps} x "
            f"num_envs * num_steps{' * processes' if world_size > 1 else ''} = {per_iteration}); "
            f"got total_steps={cfg.total_steps:,}"
        )


def profile_training(cfg: TrainConfig, sched: ProfileSchedule, out_dir: Path, top: int = 15) -> dict[str, Any]:
    """Run K training iterations of `cfg` under torch.profiler; write trace.json and breakdown.json to `out_dir`
    and return the breakdown."""
    from recurrent_ppo.trainer import Trainer  # imported here, like the train command, to keep the CLI light

    sched.validate()
    cfg = cfg.validate()
    check_fits(cfg, sched)
    trainer = Trainer(cfg)
    check_fits(cfg, sched, trainer.group.world_size)
    device = trainer.device
    on_cuda = device.type == "cuda"
    if trainer.group.parallel:  # under torchrun, a trace per process
        out_dir = out_dir / f"rank{trainer.group.rank}"
    out_dir.mkdir(parents=True, exist_ok=True)
    trace_path = out_dir / TRACE_FILE
    recorded: dict[str, Any] = {}

    def on_trace_ready(prof: profile) -> None:
        prof.export_chrome_trace(str(trace_path))
        recorded["events"] = prof.events()

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_cuda else [])
    untraced_s = []
    with profile(activities=activities, on_trace_ready=on_trace_ready,
                 schedule=schedule(wait=sched.wait, warmup=sched.warmup, active=sched.active, repeat=1)) as prof:
        for iteration in range(sched.steps):
            start = time.perf_counter()
            trainer.train_iteration(iteration)
            if on_cuda:
                # Each profiler step then ends with its device work done, so step time covers the kernels.
                torch.cuda.synchronize(device)
            if iteration < sched.wait + sched.warmup:
                untraced_s.append(time.perf_counter() - start)
            prof.step()
    if "events" not in recorded:
        raise RuntimeError("torch.profiler never called on_trace_ready: no active step was recorded")

    breakdown = summarize(recorded["events"], active=sched.active, on_device=on_cuda, top=top)
    breakdown.update(
        device=str(device), compile_mode=trainer.compile_mode, schedule=dataclasses.asdict(sched),
        untraced_step_s=untraced_s, trace=TRACE_FILE, config=dataclasses.asdict(cfg),
    )
    (out_dir / BREAKDOWN_FILE).write_text(json.dumps(breakdown, indent=2))
    return breakdown


def summarize(events: Any, *, active: int, on_device: bool, top: int) -> dict[str, Any]:
    """Phase seconds and shares, and the top ops, from the profiler's events of the `active` traced steps.

    Phase (host) seconds are the wall durations of the phase ranges; traced time is the sum of the
    ProfilerStep ranges, and "other" is what the phases leave of it. On CUDA each phase also gets `device_s`,
    the busy time of the kernels inside its GPU-side span (see `_kernel_seconds_by_phase`), and the top list
    ranks kernels by device time; on CPU it ranks ops by self CPU time. Every share is a fraction of traced
    (wall) time.
    """
    cpu_events = [e for e in events if e.device_type == DeviceType.CPU and not e.is_async]
    traced_s, phases = _host_phases(cpu_events, active)
    # Per name: [seconds, calls]. Phase and step ranges are excluded: they are the frame, not the work.
    totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    range_names = {e.name for e in cpu_events if e.is_user_annotation}
    if on_device:
        kernels = [e for e in events if e.device_type == DeviceType.CUDA and not e.is_async
                   # GPU-side copies of record_function ranges are spans over kernels, not kernels
                   and not e.is_user_annotation and e.name not in range_names]
        for name, seconds in _kernel_seconds_by_phase(events, kernels).items():
            phases[name]["device_s"] = seconds
        timed = [(e.name, e.time_range.elapsed_us()) for e in kernels]
    else:
        timed = [(e.name, e.self_cpu_time_total) for e in cpu_events]
    for name, us in timed:
        if name in PHASES or name.startswith("ProfilerStep"):
            continue
        totals[name][0] += us / 1e6
        totals[name][1] += 1
    if on_device:
        kernel_s = sum(seconds for seconds, _ in totals.values())
        phases["other"]["device_s"] = kernel_s - sum(phases[name]["device_s"] for name in PHASES)
    ranked = sorted(totals.items(), key=lambda item: item[1][0], reverse=True)[:top]
    top_ops = [{"name": name, "seconds": seconds, "share": seconds / traced_s, "calls": int(calls)}
               for name, (seconds, calls) in ranked]
    return {"traced_s": traced_s, "active_steps": active, "phases": phases,
            "top_ops_by": "device time" if on_device else "self CPU time", "top_ops": top_ops}


def _host_phases(cpu_events: list[Any], active: int) -> tuple[float, dict[str, dict[str, float]]]:
    """The traced seconds (the ProfilerStep ranges') and each phase's host seconds and share of them."""
    # The profiler renames "ProfilerStep#N" to "ProfilerStep*" in events.
    steps = [e for e in cpu_events if e.name.startswith("ProfilerStep")]
    if len(steps) != active:
        raise RuntimeError(f"expected {active} traced ProfilerStep ranges, found {len(steps)}")
    traced_s = sum(e.cpu_time_total for e in steps) / 1e6
    phases: dict[str, dict[str, float]] = {}
    for name in PHASES:
        ranges = [e for e in cpu_events if e.name == name]
        if len(ranges) != active:
            raise RuntimeError(f"expected {active} {name!r} ranges in the trace, found {len(ranges)}: "
                               "Trainer.train_iteration must wrap each phase in record_function")
        phases[name] = {"host_s": sum(e.cpu_time_total for e in ranges) / 1e6}
    phases["other"] = {"host_s": traced_s - sum(p["host_s"] for p in phases.values())}
    for stats in phases.values():
        stats["share"] = stats["host_s"] / traced_s
    return traced_s, phases


def _kernel_seconds_by_phase(events: Any, kernels: list[Any]) -> dict[str, float]:
    """Seconds of `kernels` that start inside each phase's span on the GPU timeline.

    The profiler mirrors each record_function range on the GPU as a span over the kernels launched in it.
    Counting kernels inside those spans includes CUDA-graph replays, which the CPU range's device_time_total
    misses: a graph's kernels belong to no op (on an H100 that left 46 of 103 device ms per iteration unassigned).
    """
    spans = {name: [(e.time_range.start, e.time_range.end) for e in events
                    if e.device_type == DeviceType.CUDA and e.is_user_annotation and e.name == name]
             for name in PHASES}
    seconds = dict.fromkeys(PHASES, 0.0)
    for kernel in kernels:
        start = kernel.time_range.start
        for name, ranges in spans.items():
            if any(begin <= start < end for begin, end in ranges):
                seconds[name] += kernel.time_range.elapsed_us() / 1e6
                break
    return seconds


def format_breakdown(breakdown: dict[str, Any]) -> str:
    """The breakdown as text tables, times in ms per traced iteration."""
    per_iter_ms = 1e3 / breakdown["active_steps"]
    on_device = "device_s" in breakdown["phases"]["rollout"]
    lines = [f"traced {breakdown['active_steps']} iteration(s), {breakdown['traced_s'] * per_iter_ms:.1f} ms each "
             f"(host wall time; profiler overhead included)",
             f"{'phase':<10}{'host ms/iter':>14}{'share':>8}" + (f"{'device ms/iter':>16}" if on_device else "")]
    for name, stats in breakdown["phases"].items():
        row = f"{name:<10}{stats['host_s'] * per_iter_ms:>14.2f}{stats['share']:>8.1%}"
        if on_device:
            row += f"{stats['device_s'] * per_iter_ms:>16.2f}"
        lines.append(row)
    if on_device:
        lines.append("top kernels by device time (share of traced wall time):")
    else:
        lines.append("top ops by self CPU time (CPU run, no device kernels; share of traced wall time):")
    lines.append(f"{'ms/iter':>10}{'share':>8}{'calls/iter':>12}  name")
    for op in breakdown["top_ops"]:
        name = op["name"] if len(op["name"]) <= 90 else op["name"][:87] + "..."
        lines.append(f"{op['seconds'] * per_iter_ms:>10.3f}{op['share']:>8.1%}"
                     f"{op['calls'] / breakdown['active_steps']:>12.0f}  {name}")
    if not breakdown["top_ops"]:
        lines.append("  (none recorded" + (": is CUPTI available to the profiler?)" if on_device else ")"))
    return "\n".join(lines)
