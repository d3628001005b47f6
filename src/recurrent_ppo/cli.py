"""`recurrent-ppo` command line: subcommands train, eval, plot and profile, parsed from dataclasses by tyro.

Every `TrainConfig` field is a flag of `train` and `profile` (`--num-envs`, `--anneal-lr/--no-anneal-lr`), its
docstring the help. `--preset NAME` and `--resume RUN_DIR` choose the defaults the other flags then override:
a preset's configuration, or the saved run's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Union

import tyro

from recurrent_ppo.compile import CompileMode
from recurrent_ppo.config import FAMILY_PRESETS, PRESETS, TrainConfig, config_from_dict
from recurrent_ppo.runfolder import RunFolderInUse, RunFolderWriteError
from recurrent_ppo.runstate import RESUMABLE, resumable_flags

TRAINER_KEYS = ("resolved_device", "resolved_compile_mode", "resolved_rnn_kernel", "resolved_env_workers",
                "world_size")
"""What the trainer writes into config.json beside the TrainConfig fields."""

PresetName = Literal[tuple(sorted(PRESETS))]  # type: ignore[valid-type]
Config = Annotated[TrainConfig, tyro.conf.arg(name=""), tyro.conf.OmitArgPrefixes]
"""A TrainConfig whose fields become top-level flags of the subcommand."""



@dataclass
class Train:
    """Train a policy."""

    config: Config
    preset: Annotated[PresetName | None, tyro.conf.arg(metavar="NAME")] = None  # type: ignore[valid-type]
    """Start from a named configuration; flags given beside it override it."""
    resume: Annotated[str | None, tyro.conf.arg(metavar="RUN_DIR", help=(
        f"Continue the run in this folder from its checkpoint, with its configuration; only {resumable_flags()} "
        f"may change."))] = None
    config_file: Annotated[str | None, tyro.conf.arg(name="config", metavar="FILE")] = None
    """Start from the configuration in FILE (a run's config.json); flags given beside it override it."""
    debug: bool = False
    """Show the full traceback of an error instead of its one-line message."""


@dataclass
class Eval:
    """Evaluate a saved policy with the deterministic policy on the run's env."""

    path: tyro.conf.Positional[str]
    """checkpoint.pt, or the run folder holding it."""
    episodes: int = 100
    """Episodes to average."""
    num_envs: int | None = None
    """Envs stepped together (default: the run's)."""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N."""
    seed: int = 1
    """Seed of the envs' episodes."""
    compile_mode: CompileMode = "off"
    """torch.compile mode of the evaluation step."""
    debug: bool = False
    """Show the full traceback of an error instead of its one-line message."""


@dataclass
class Plot:
    """Draw a run's learning curves to a PNG."""

    run_dir: tyro.conf.Positional[str]
    """Run folder holding metrics.jsonl."""
    out: str | None = None
    """PNG to write (default: RUN_DIR/curves.png)."""
    debug: bool = False
    """Show the full traceback of an error instead of its one-line message."""


@dataclass
class Profile:
    """Run wait + warmup + active training iterations under torch.profiler, write a Chrome trace (trace.json) and
    breakdown.json, and print the time per phase and the top kernels/ops."""

    config: Config
    wait: int = 1
    """Untraced iterations first; the first one pays for compilation."""
    warmup: int = 1
    """Iterations the profiler runs on but discards."""
    active: int = 2
    """Iterations traced."""
    out: str | None = None
    """Output folder (default: profiles/<env>-<timestamp>)."""
    top: int = 15
    """Rows of the top kernels/ops table."""
    preset: Annotated[PresetName | None, tyro.conf.arg(metavar="NAME")] = None  # type: ignore[valid-type]
    """Start from a named configuration; flags given beside it override it."""
    config_file: Annotated[str | None, tyro.conf.arg(name="config", metavar="FILE")] = None
    """Start from the configuration in FILE (a run's config.json); flags given beside it override it."""
    debug: bool = False
    """Show the full traceback of an error instead of its one-line message."""


@dataclass
class Benchmark:
    """Train every task of a suite for every seed; write a table (markdown, JSON) and the curves (PNG)."""

    config: Config
    suite: str = "popgym-easy"
    """The tasks: popgym-easy, popgym-medium, popgym-hard or memory; or envs of your choice, comma-separated
    (any --env form: popgym/CountRecallEasy,gym:CartPole-v1,my_envs:MyEnv)."""
    seeds: int = 3
    """Seeds 1..N of each task."""
    processes: int = 1
    """Runs trained at a time, each in a process of its own with an equal share of the cores for torch's threads:
    2 on a 2-core CPU trains a suite in about half the time (on a GPU they share the device)."""
    steps: int | None = None
    """Training steps per run (default: --total-steps)."""
    out: str | None = None
    """Output folder (default: benchmarks/<suite>-<timestamp>)."""
    debug: bool = False
    """Show the full traceback of an error instead of its one-line message."""


@dataclass
class Export:
    """Write a trained agent's deterministic step, (obs, state, episode_start) -> (action, state) with the run's
    observation statistics folded in, as a torch.export program (.pt2) and, with --onnx, an ONNX file; load it
    with torch.export.load(FILE).module() (docs/agent.md)."""

    path: tyro.conf.Positional[str]
    """checkpoint.pt, or the run folder holding it."""
    out: str | None = None
    """The .pt2 file to write, replaced if it exists (default: agent.pt2 in the run folder); --onnx writes the
    same name with the suffix .onnx."""
    batch: int = 1
    """Envs the exported step takes at once (a fixed batch size)."""
    onnx: bool = False
    """Write an ONNX file too (needs the onnx extra: pip install 'recurrent-ppo[onnx]')."""
    debug: bool = False
    """Show the full traceback of an error instead of its one-line message."""


Command = Union[Train, Eval, Plot, Profile, Benchmark, Export]  # noqa: UP007 - tyro builds the subcommands from a Union


class UsageError(ValueError):
    """A command line that names something unusable (a missing checkpoint, a preset with --resume)."""


def _option(argv: Sequence[str], flag: str) -> str | None:
    """The value given to `flag` in `argv` (`--flag VALUE` or `--flag=VALUE`), the last one if repeated."""
    value = None
    for i, token in enumerate(argv):
        if token == flag and i + 1 < len(argv):
            value = argv[i + 1]
        elif token.startswith(flag + "="):
            value = token[len(flag) + 1:]
    return value


def config_from_file(path: str) -> TrainConfig:
    """The TrainConfig saved in a run's config.json (what the trainer adds beside the fields is left out), each
    setting checked against its field's type."""
    try:
        saved = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UsageError(f"--config {path}: cannot read a JSON configuration ({err})") from None
    if not isinstance(saved, dict):
        raise UsageError(f"--config {path}: holds no configuration object")
    fields = {field.name for field in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(saved) - fields - set(TRAINER_KEYS))
    if unknown:
        raise UsageError(f"--config {path}: unknown settings {unknown}; the file must be a run's config.json")
    return config_from_dict(saved, f"--config {path}", ignore=TRAINER_KEYS)


def checkpoint_path(path: str) -> Path:
    """The checkpoint file that `path` (a checkpoint, or the run folder holding it) names."""
    from recurrent_ppo.checkpoint import CHECKPOINT_FILE

    return Path(path) / CHECKPOINT_FILE if Path(path).is_dir() else Path(path)


def checkpoint_config(saved: dict, path: str) -> TrainConfig:
    """The TrainConfig saved in the checkpoint read from `path`, each setting checked against its field's type."""
    return config_from_dict(saved["config"], f"the configuration saved in {checkpoint_path(path)}")


def stopped_before_a_checkpoint(run_dir: str) -> bool:
    """Whether `run_dir` is a run folder whose run stopped before writing its first checkpoint: it holds the run's
    config.json and no checkpoint, so `train --resume` starts the run over from that configuration."""
    folder = Path(run_dir)
    return folder.is_dir() and (folder / "config.json").is_file() and not checkpoint_path(run_dir).exists()


def _defaults(argv: Sequence[str]) -> tuple[TrainConfig, dict | None]:
    """The configuration the flags of `train`/`profile` override, and the checkpoint being resumed, if any."""
    preset, resume, config = _option(argv, "--preset"), _option(argv, "--resume"), _option(argv, "--config")
    given = [flag for flag, value in (("--preset", preset), ("--resume", resume), ("--config", config)) if value]
    if len(given) > 1:
        raise UsageError(f"{' and '.join(given)} both choose the starting configuration: give one")
    if resume is not None:
        from recurrent_ppo.checkpoint import read_checkpoint

        if stopped_before_a_checkpoint(resume):  # train_command starts it over
            return config_from_file(str(Path(resume) / "config.json")), None
        saved = read_checkpoint(resume)
        return checkpoint_config(saved, resume), saved
    if config is not None:
        return config_from_file(config), None
    if preset is None and (family := family_preset(argv)) is not None:
        preset = family
    if preset in PRESETS:
        return PRESETS[preset].replace(preset=preset), None
    return TrainConfig(), None  # an unknown preset is left for tyro to reject with the choices


def family_preset(argv: Sequence[str]) -> str | None:
    """The preset of the task family that `--env` (or a benchmark's `--suite`, popgym-easy by default) names."""
    env = _option(argv, "--env") or ""
    envs = [env]
    if argv and argv[0] == "benchmark":  # a named suite's family, or every listed env's
        envs = [task.replace("-", "/", 1) if "/" not in task and ":" not in task else task
                for task in (_option(argv, "--suite") or "popgym-easy").split(",")]
    return next((name for prefix, name in FAMILY_PRESETS.items() if all(env.startswith(prefix) for env in envs)), None)


def parse(argv: Sequence[str]) -> tuple[Command, dict | None]:
    """The subcommand and its arguments; for `train --resume`, also the saved checkpoint."""
    base, saved = _defaults(argv)
    command = Annotated[Union[  # type: ignore[valid-type]
        Annotated[Train, tyro.conf.subcommand("train", default=Train(config=base))],
        Annotated[Eval, tyro.conf.subcommand("eval")],
        Annotated[Plot, tyro.conf.subcommand("plot")],
        Annotated[Profile, tyro.conf.subcommand("profile", default=Profile(config=base))],
        Annotated[Benchmark, tyro.conf.subcommand("benchmark", default=Benchmark(config=base))],
        Annotated[Export, tyro.conf.subcommand("export")],
    ], tyro.conf.OmitSubcommandPrefixes]
    args = tyro.cli(command, args=list(argv), prog="recurrent-ppo",
                    description="Recurrent PPO on GPU-native and gymnasium envs.")
    return args, saved


def resumed_config(base: TrainConfig, given: TrainConfig, resume: str) -> TrainConfig:
    """The saved run's configuration `base` with the RESUMABLE settings of `given` applied; a change to any other
    setting is an error."""
    for field in dataclasses.fields(TrainConfig):
        name = field.name
        if name in RESUMABLE or name == "run_dir" or getattr(given, name) == getattr(base, name):
            continue
        raise ValueError(f"--{name.replace('_', '-')} cannot change when resuming (the run has "
                         f"{name}={getattr(base, name)!r})")
    return base.replace(**{name: getattr(given, name) for name in RESUMABLE}, run_dir=resume)


def train_config(args: Train, saved: dict | None) -> TrainConfig:
    """The run's configuration: the flags', or for --resume the saved run's with the RESUMABLE flags applied."""
    if args.resume is None:
        return args.config.validate()
    base = (config_from_file(str(Path(args.resume) / "config.json")) if saved is None  # _defaults: no checkpoint
            else checkpoint_config(saved, args.resume))
    return resumed_config(base, args.config, args.resume).validate()


def resume_or_start_over(trainer, args: Train, saved: dict | None) -> None:
    """Load the checkpoint being resumed into `trainer`, or mark a run that wrote none to start over."""
    if saved is not None:
        try:
            trainer.restore(saved)
        except ValueError as err:
            raise UsageError(f"cannot resume {args.resume}: {err}") from err
    elif args.resume is not None:
        trainer.start_over()
        if trainer.group.is_main:
            print(f"{args.resume}: no checkpoint was written (the run stopped before its first), so the run "
                  f"starts over with its saved configuration, {Path(args.resume) / 'config.json'}", flush=True)


def train_command(args: Train, saved: dict | None) -> int:
    from recurrent_ppo import distributed
    from recurrent_ppo.finite import NonFiniteError
    from recurrent_ppo.stopping import Aborted
    from recurrent_ppo.trainer import Trainer, TrainingFailed, TrainingStopped

    cfg = train_config(args, saved)
    trainer = None
    try:
        trainer = Trainer(cfg)
        resume_or_start_over(trainer, args, saved)
        if not trainer.group.is_main:  # data-parallel: rank 0 reports for all processes
            trainer.train(handle_signals=True)
            return 0
        processes = f" in each of {trainer.group.world_size} processes" if trainer.group.parallel else ""
        start = (f", resuming after iteration {trainer.start_iteration} {trainer.resume_note()}"
                 if trainer.resumed else "")
        print(f"training {cfg.env} on {trainer.device}: {trainer.num_iterations} iterations of "
              f"{cfg.num_envs} envs x {cfg.num_steps} steps{processes}{start} -> {trainer.run_dir}", flush=True)
        if cfg.env_workers:
            print(workers_line(cfg, trainer), flush=True)
        summary = trainer.train(handle_signals=True)
    except (TrainingStopped, TrainingFailed, NonFiniteError, RunFolderWriteError, Aborted) as err:
        if args.debug and isinstance(err, (RunFolderWriteError, Aborted)):
            raise
        return stopped_early(err, trainer, args.debug)
    finally:
        if trainer is not None:
            trainer.close()
        distributed.leave()
    print_summary(summary, cfg)
    return 0


def stopped_early(err: Exception, trainer, debug: bool) -> int:
    """Say on stderr why training stopped before the end and what was kept; the exit code."""
    from recurrent_ppo.stopping import Aborted
    from recurrent_ppo.trainer import TrainingFailed, TrainingStopped

    resume = f"recurrent-ppo train --resume {trainer.run_dir}"
    kept = trainer.run_dir / "checkpoint.pt"
    if isinstance(err, TrainingStopped):
        print(f"recurrent-ppo train: {err}" + (f"; resume with: {resume}" if err.checkpoint is not None else ""),
              file=sys.stderr)
        return err.exit_code
    if isinstance(err, TrainingFailed):  # an env raised or broke its spaces: the last completed iteration is kept
        if debug:
            traceback.print_exception(err)
        what = (f"the checkpoint of the {err.iterations} completed iterations is kept: {err.checkpoint}; resume "
                f"with: {resume}" if err.checkpoint is not None
                else "no iteration had completed, so there is no checkpoint" if trainer.group.is_main
                else "rank 0 writes the checkpoints")
        print(f"recurrent-ppo train: {err}; {what}{'' if debug else ' (--debug shows the traceback)'}",
              file=sys.stderr)
        return 1
    if isinstance(err, (RunFolderWriteError, Aborted)):  # a full disk, a read-only folder; a second Ctrl-C
        last = (f"the last good checkpoint is {kept} (resume with: {resume})" if kept.exists()
                else "no checkpoint was written")
    else:  # NonFiniteError
        last = f"the last good checkpoint is {kept}" if kept.exists() else "no checkpoint was written"
    print(f"recurrent-ppo train: {err}; {last}", file=sys.stderr)
    return err.exit_code if isinstance(err, Aborted) else 1


def print_summary(summary: dict, cfg: TrainConfig) -> None:
    print(f"trained {summary['global_step']:,} steps in {summary['train_time_s']:.1f} s "
          f"({summary['sps']:,.0f} steps/s); mean return of the last 100 training episodes "
          f"{summary['episode_return_mean']:.1f}")
    if "stopped" in summary:
        print(f"stopped early: {summary['stopped']} of {cfg.time_budget:g} s reached")
    if "eval_return_mean" in summary:
        print(f"deterministic evaluation over {cfg.eval_episodes} episodes: "
              f"mean return {summary['eval_return_mean']:.1f}")
    print(f"checkpoint: {summary['checkpoint']}")


def workers_line(cfg: TrainConfig, trainer) -> str:
    """How the env's copies step, for a run with env_workers set: in workers (overlapped or not) or in-process."""
    from recurrent_ppo.rollout import OverlappedRolloutCollector

    workers, note = trainer.env_workers()
    chosen = f"env_workers {cfg.env_workers}" + (f" ({note})" if note else "")
    if not workers:
        return f"{chosen}: the env steps in this process"
    overlapped = isinstance(trainer.collector, OverlappedRolloutCollector)
    overlap = ", one half stepping while the policy acts on the other" if overlapped else ""
    return f"{chosen}: the env's copies step in {workers} worker processes{overlap}"


def eval_command(args: Eval) -> int:
    import torch

    from recurrent_ppo.checkpoint import load_obs_normalizer, load_policy, read_checkpoint
    from recurrent_ppo.envs import make_env
    from recurrent_ppo.rollout import Evaluator

    saved = read_checkpoint(args.path)
    trained = checkpoint_config(saved, args.path)
    cfg = trained.replace(device=args.device, seed=args.seed, num_envs=args.num_envs or trained.num_envs)
    if args.episodes < 1 or cfg.num_envs < 1:
        raise ValueError(f"--episodes and --num-envs must be >= 1, got {args.episodes} and {cfg.num_envs}")
    device = cfg.resolved_device()
    torch.manual_seed(cfg.seed)
    policy = load_policy(args.path, device)
    # A policy trained on normalized observations sees them normalized by the run's statistics, frozen.
    env = make_env(cfg.env, cfg.num_envs, device, previous_action=cfg.previous_action, workers=cfg.env_workers)
    evaluator = Evaluator(policy, env, compile_mode=args.compile_mode, obs_norm=load_obs_normalizer(args.path, device))
    returns = evaluator.episode_returns(args.episodes).double()
    spread = f" +- {returns.std():.2f}" if args.episodes > 1 else ""
    print(f"{cfg.env}: deterministic evaluation over {args.episodes} episodes on {device}: "
          f"mean return {returns.mean():.1f}{spread} (min {returns.min():.1f}, max {returns.max():.1f})")
    return 0


def plot_command(args: Plot) -> int:
    from recurrent_ppo.plot import plot_run

    out = plot_run(args.run_dir, args.out)
    print(f"wrote {out}")
    return 0


def profile_command(args: Profile) -> int:
    """Validate, profile, print the breakdown; an invalid configuration fails before anything is written."""
    from recurrent_ppo.profiling import (
        BREAKDOWN_FILE, TRACE_FILE, ProfileSchedule, check_fits, default_profile_dir, format_breakdown,
        profile_training)

    cfg = args.config
    sched = ProfileSchedule(args.wait, args.warmup, args.active)
    sched.validate()
    cfg.validate()
    check_fits(cfg, sched)
    if args.top < 1:
        raise ValueError(f"top={args.top} must be >= 1")
    if sched.wait + sched.warmup == 0 and cfg.resolved_compile_mode(cfg.resolved_device()) != "off":
        print("recurrent-ppo profile: warning: no wait/warmup iterations, so compilation lands in the trace",
              file=sys.stderr)
    out_dir = Path(args.out) if args.out else default_profile_dir(cfg)
    print(f"profiling {cfg.env}: {sched.steps} iterations (wait {sched.wait}, warmup {sched.warmup}, "
          f"active {sched.active}) of {cfg.num_envs} envs x {cfg.num_steps} steps -> {out_dir}")
    breakdown = profile_training(cfg, sched, out_dir, top=args.top)
    untraced = ", ".join(f"{s:.2f}" for s in breakdown["untraced_step_s"]) or "none"
    compiled = breakdown["compile_mode"] != "off"
    print(f"device {breakdown['device']}, compile mode {breakdown['compile_mode']}; untraced iterations took "
          f"{untraced} s" + (" (the first includes compilation)" if compiled and untraced != "none" else ""))
    print(format_breakdown(breakdown))
    print(f"trace: {out_dir / TRACE_FILE} (open in https://ui.perfetto.dev); breakdown: {out_dir / BREAKDOWN_FILE}")
    return 0


def benchmark_command(args: Benchmark) -> int:
    import time

    from recurrent_ppo.benchmark import SUITES, markdown_table, run_benchmark

    if args.seeds < 1 or args.processes < 1:
        raise UsageError(f"--seeds {args.seeds} and --processes {args.processes} must be >= 1")
    base = args.config.replace(total_steps=args.steps) if args.steps else args.config
    tasks = suite_tasks(args.suite)
    name = args.suite if args.suite in SUITES else "tasks"
    out = Path(args.out) if args.out else Path("benchmarks") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    print(f"benchmark {args.suite}: {len(tasks)} tasks x {args.seeds} seeds of {base.total_steps:,} steps -> {out}",
          flush=True)
    results = run_benchmark(tasks, args.seeds, base, out, say=lambda line: print(line, flush=True),
                            processes=args.processes)
    print(markdown_table([result.row() for result in results]), end="")
    print(f"table: {out / 'results.md'}; JSON: {out / 'results.json'}; curves: {out / 'curves.png'}")
    return 0


def suite_tasks(suite: str) -> list[str]:
    """The envs of `--suite`: a named suite's, or the comma-separated env names given."""
    from recurrent_ppo.benchmark import SUITES
    from recurrent_ppo.envs import ENV_CHOICES, is_env_name

    if suite in SUITES:
        return SUITES[suite]()
    tasks = [task.strip() for task in suite.split(",") if task.strip()]
    unknown = [task for task in tasks if not is_env_name(task)]
    if not tasks or unknown:
        raise UsageError(f"--suite {suite!r}: {unknown or 'no env'} is not a suite ({', '.join(sorted(SUITES))}) nor "
                         f"a comma-separated list of envs, each {ENV_CHOICES}")
    return tasks


def export_command(args: Export) -> int:
    from recurrent_ppo.export import export_run

    if args.batch < 1:
        raise UsageError(f"--batch {args.batch} must be >= 1")
    written = export_run(args.path, args.out, batch_size=args.batch, onnx=args.onnx)
    print(f"wrote the agent's step for a batch of {args.batch}: {', '.join(map(str, written))}")
    return 0


def help_text(command: str) -> str:
    """What `recurrent-ppo COMMAND --help` prints."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        main([command, "--help"])
    return printed.getvalue()


USER_ERRORS = (UsageError, ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, PermissionError,
               ImportError, RunFolderInUse)
"""Failures a user can fix (a setting, a path, a missing package): one line and exit code 2, without --debug."""


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and not argv[0].startswith("-") else "train"
    if os.getcwd() not in sys.path:  # as uvicorn does: an env's module beside the user imports (--env mod:Env)
        sys.path.insert(0, os.getcwd())
    try:
        args, saved = parse(argv)
        if isinstance(args, Train):
            return train_command(args, saved)
        if isinstance(args, Eval):
            return eval_command(args)
        if isinstance(args, Plot):
            return plot_command(args)
        if isinstance(args, Benchmark):
            return benchmark_command(args)
        if isinstance(args, Export):
            return export_command(args)
        return profile_command(args)
    except SystemExit as exit:  # tyro's usage errors and --help
        return exit.code if isinstance(exit.code, int) else 2
    except USER_ERRORS as err:
        if "--debug" in argv:
            raise
        print(f"recurrent-ppo {command}: {err} (--debug shows the traceback)", file=sys.stderr)
        return 2
    except RunFolderWriteError as err:  # not the user's setting but the machine's: a read-only folder, a full disk
        if "--debug" in argv:
            raise
        print(f"recurrent-ppo {command}: {err} (--debug shows the traceback)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C outside a run's own handling of it (parsing, building, evaluating)
        if "--debug" in argv:
            raise
        print(f"recurrent-ppo {command}: interrupted", file=sys.stderr)
        return 130
