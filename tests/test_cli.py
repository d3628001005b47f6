"""Command line and configuration: flags from the dataclass, invalid configs rejected before any work."""

import json
import subprocess
import sys

import pytest

from recurrent_ppo.cli import build_parser, config_from_args, field_docs, main
from recurrent_ppo.config import TrainConfig


def test_every_config_field_has_a_flag_and_a_docstring():
    docs = field_docs(TrainConfig)
    help_text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    for name in TrainConfig.__dataclass_fields__:
        assert docs.get(name), f"TrainConfig.{name} has no docstring"
        assert "--" + name.replace("_", "-") in help_text, name


def test_flags_override_defaults():
    args = build_parser().parse_args(["train", "--env", "cartpole", "--num-envs", "8", "--no-anneal-lr",
                                      "--learning-rate", "1e-4"])
    cfg = config_from_args(args)
    assert (cfg.env, cfg.num_envs, cfg.anneal_lr, cfg.learning_rate) == ("cartpole", 8, False, 1e-4)
    assert cfg.num_steps == TrainConfig().num_steps


@pytest.mark.parametrize("flags,message", [
    (["--num-steps", "100", "--seq-len", "16"], "num_steps=100 is not divisible by seq_len=16"),
    (["--num-minibatches", "3"], "num_minibatches=3 does not divide the 256 sequences"),
    (["--env", "pong"], "env='pong' is unknown"),
    (["--total-steps", "10"], "less than one rollout"),
    (["--gamma", "1.5"], "gamma=1.5 must lie in [0, 1]"),
    (["--num-envs", "0"], "num_envs=0 must be >= 1"),
    (["--matmul-precision", "tf32"], "matmul_precision='tf32' must be one of"),
])
def test_invalid_config_fails_before_any_work(tmp_path, capsys, flags, message):
    run_dir = tmp_path / "run"
    assert main(["train", *flags, "--run-dir", str(run_dir)]) == 2
    assert message in capsys.readouterr().err
    assert not run_dir.exists(), "nothing may be written for an invalid config"


def test_module_entry_point_trains(tmp_path):
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "recurrent_ppo", "train", "--env", "cartpole", "--num-envs", "4", "--num-steps", "16",
         "--seq-len", "4", "--num-minibatches", "2", "--total-steps", "128", "--hidden-dim", "8",
         "--eval-episodes", "2", "--device", "cpu", "--compile-mode", "off", "--run-dir", str(run_dir)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "deterministic evaluation over 2 episodes: mean return" in proc.stdout
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2
    assert json.loads((run_dir / "config.json").read_text())["num_envs"] == 4
    assert (run_dir / "checkpoint.pt").exists()


def test_eval_command_scores_a_saved_policy(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", "--env", "cartpole", "--num-envs", "4", "--num-steps", "16", "--seq-len", "4",
                 "--num-minibatches", "2", "--total-steps", "128", "--hidden-dim", "8", "--eval-episodes", "0",
                 "--device", "cpu", "--compile-mode", "off", "--no-progress", "--run-dir", str(run_dir)]) == 0
    capsys.readouterr()
    returns = []
    for path in (run_dir, run_dir / "checkpoint.pt"):  # the run folder or the file itself
        assert main(["eval", str(path), "--episodes", "6", "--num-envs", "3", "--device", "cpu"]) == 0
        out = capsys.readouterr().out
        assert out.startswith("cartpole: deterministic evaluation over 6 episodes on cpu: mean return "), out
        returns.append(float(out.split("mean return ")[1]))
    assert returns[0] == returns[1], "same seed, same episodes"
    assert 1.0 <= returns[0] <= 500.0


def test_eval_command_names_a_missing_checkpoint(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "nowhere")]) == 2
    assert f"no checkpoint at {tmp_path / 'nowhere'}" in capsys.readouterr().err
