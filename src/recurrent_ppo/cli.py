"""`recurrent-ppo` command line: subcommands whose flags are generated from the config dataclass."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import sys
import textwrap
from collections.abc import Sequence

from recurrent_ppo.config import PRESETS, TrainConfig


def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of a dataclass, by field name."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, following in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)):
            docs[node.target.id] = str(following.value.value)
    return docs


def add_config_arguments(parser: argparse.ArgumentParser, cls: type = TrainConfig) -> None:
    """One `--flag-name` per dataclass field, typed by its annotation, its docstring as help."""
    docs = field_docs(cls)
    for field in dataclasses.fields(cls):
        flag = "--" + field.name.replace("_", "-")
        kind = {"int": int, "float": float, "str": str, "bool": bool}[str(field.type)]
        # default=None marks "not given" (so a preset's value survives); the help names the real default.
        help = f"{docs.get(field.name, '')} (default: {field.default})"
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help)
        else:
            parser.add_argument(flag, type=kind, default=None, metavar=kind.__name__.upper(), help=help)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends defaults, except the None of config flags, whose help already names the config's default."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if action.default is None else super()._get_help_string(action)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The preset named by --preset (or the default config), with every flag given on the command line applied."""
    base = PRESETS[args.preset] if args.preset else TrainConfig()
    changes = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
               if getattr(args, f.name) is not None}
    return base.replace(**changes)


# What a resumed run may change: how long it runs and how, never what it trains (env, sizes, PPO settings).
RESUMABLE = ("total_steps", "checkpoint_every", "eval_episodes", "progress", "device", "compile_mode",
             "compile_backend", "matmul_precision")


def resumed_config(saved: dict, args: argparse.Namespace) -> TrainConfig:
    """The saved run's configuration with the RESUMABLE flags given applied; any other flag is an error."""
    if args.preset:
        raise ValueError("--preset cannot be combined with --resume: the run keeps its configuration")
    base = TrainConfig(**saved)
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
             if getattr(args, f.name) is not None}
    fixed = {name: value for name, value in given.items()
             if name not in RESUMABLE and not (name == "run_dir" and value == args.resume)}
    if fixed:
        name = sorted(fixed)[0]
        raise ValueError(f"--{name.replace('_', '-')} cannot change when resuming (the run has "
                         f"{name}={getattr(base, name)!r})")
    return base.replace(**{name: given[name] for name in given if name in RESUMABLE}, run_dir=args.resume)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="recurrent-ppo", description="Recurrent (LSTM) PPO on GPU-native envs.")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a policy", formatter_class=HelpFormatter)
    train.add_argument("--preset", choices=sorted(PRESETS), default=None, help="start from a named configuration")
    train.add_argument("--resume", metavar="RUN_DIR", default=None,
                       help="continue the run in RUN_DIR from its checkpoint, with its configuration; only "
                            f"{', '.join('--' + f.replace('_', '-') for f in RESUMABLE)} may change")
    add_config_arguments(train)
    plot = commands.add_parser("plot", help="draw a run's learning curves to a PNG")
    plot.add_argument("run_dir", metavar="RUN_DIR", help="run folder holding metrics.jsonl")
    plot.add_argument("--out", metavar="PATH", default=None, help="PNG to write (default: RUN_DIR/curves.png)")
    evaluate = commands.add_parser("eval", help="evaluate a saved policy with the deterministic policy",
                                   formatter_class=HelpFormatter)
    evaluate.add_argument("path", metavar="PATH", help="checkpoint.pt, or the run folder holding it")
    evaluate.add_argument("--episodes", type=int, default=100, help="episodes to average")
    evaluate.add_argument("--num-envs", type=int, default=None, help="envs stepped together (default: the run's)")
    evaluate.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    evaluate.add_argument("--seed", type=int, default=1, help="seed of the envs' episodes")
    evaluate.add_argument("--compile-mode", default="off", help="torch.compile mode of the evaluation step")
    from recurrent_ppo.profiling import add_profile_parser  # profiling builds on this module's flag helpers

    add_profile_parser(commands)
    return parser


def train_command(args: argparse.Namespace) -> int:
    from recurrent_ppo import distributed
    from recurrent_ppo.checkpoint import read_checkpoint
    from recurrent_ppo.trainer import Trainer

    saved = None
    try:
        if args.resume:
            saved = read_checkpoint(args.resume)
            cfg = resumed_config(saved["config"], args)
        else:
            cfg = config_from_args(args)
        cfg.validate()
    except (FileNotFoundError, ValueError, TypeError) as err:
        print(f"recurrent-ppo train: invalid configuration: {err}", file=sys.stderr)
        return 2
    try:
        trainer = Trainer(cfg)
        if saved is not None:
            try:
                trainer.restore(saved)
            except ValueError as err:
                print(f"recurrent-ppo train: cannot resume {args.resume}: {err}", file=sys.stderr)
                return 2
        if not trainer.group.is_main:  # data-parallel: rank 0 reports for all processes
            trainer.train()
            return 0
        processes = f" in each of {trainer.group.world_size} processes" if trainer.group.parallel else ""
        start = f", resuming after iteration {trainer.start_iteration}" if trainer.resumed else ""
        print(f"training {cfg.env} on {trainer.device}: {trainer.num_iterations} iterations of "
              f"{cfg.num_envs} envs x {cfg.num_steps} steps{processes}{start} -> {trainer.run_dir}")
        summary = trainer.train()
    finally:
        distributed.leave()
    print(f"trained {summary['global_step']:,} steps in {summary['train_time_s']:.1f} s "
          f"({summary['sps']:,.0f} steps/s); mean return of the last 100 training episodes "
          f"{summary['episode_return_mean']:.1f}")
    if "eval_return_mean" in summary:
        print(f"deterministic evaluation over {cfg.eval_episodes} episodes: "
              f"mean return {summary['eval_return_mean']:.1f}")
    print(f"checkpoint: {summary['checkpoint']}")
    return 0


def eval_command(args: argparse.Namespace) -> int:
    import torch

    from recurrent_ppo.checkpoint import load_policy, read_checkpoint
    from recurrent_ppo.envs import make_env
    from recurrent_ppo.rollout import Evaluator

    try:
        saved = read_checkpoint(args.path)
        cfg = TrainConfig(**saved["config"]).replace(device=args.device, seed=args.seed,
                                                     num_envs=args.num_envs or saved["config"]["num_envs"])
        if args.episodes < 1 or cfg.num_envs < 1:
            raise ValueError(f"--episodes and --num-envs must be >= 1, got {args.episodes} and {cfg.num_envs}")
        device = cfg.resolved_device()
    except (FileNotFoundError, ValueError, TypeError) as err:
        print(f"recurrent-ppo eval: {err}", file=sys.stderr)
        return 2
    torch.manual_seed(cfg.seed)
    policy = load_policy(args.path, device)
    evaluator = Evaluator(policy, make_env(cfg.env, cfg.num_envs, device), compile_mode=args.compile_mode)
    mean_return = evaluator.evaluate(args.episodes)
    print(f"{cfg.env}: deterministic evaluation over {args.episodes} episodes on {device}: "
          f"mean return {mean_return:.1f}")
    return 0


def plot_command(args: argparse.Namespace) -> int:
    from recurrent_ppo.plot import MetricsError, plot_run

    try:
        out = plot_run(args.run_dir, args.out)
    except MetricsError as err:
        print(f"recurrent-ppo plot: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from recurrent_ppo.profiling import profile_command

    commands = {"train": train_command, "eval": eval_command, "plot": plot_command, "profile": profile_command}
    return commands[args.command](args)
