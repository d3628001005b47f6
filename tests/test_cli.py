"""Command line and configuration: flags from the dataclass, invalid configs rejected before any work."""

import ast
import inspect
import json
import subprocess
import sys
import textwrap

import pytest

from recurrent_ppo.cli import Train, UsageError, help_text, main, parse
from recurrent_ppo.config import PRESETS, TrainConfig


def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of a dataclass, by field name."""
    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    return {node.target.id: following.value.value for node, following in zip(body, body[1:])
            if isinstance(node, ast.AnnAssign) and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)}


def parse_train(argv: list[str]) -> TrainConfig:
    args, _ = parse(["train", *argv])
    assert isinstance(args, Train)
    return args.config


@pytest.mark.parametrize("command", ["train", "profile"])
def test_every_config_field_has_a_flag_with_its_docstring(command):
    docs = field_docs(TrainConfig)
    text = " ".join(help_text(command).replace("│", " ").split())  # the help, unwrapped
    for name in TrainConfig.__dataclass_fields__:
        assert docs.get(name), f"TrainConfig.{name} has no docstring"
        if name == "preset":  # recorded, not set: the subcommand's own --preset chooses it
            assert "--preset NAME Start from a named configuration" in text
            continue
        assert "--" + name.replace("_", "-") in text, name
        first_words = " ".join(docs[name].split()[:4])
        assert first_words in text, f"--{name} help lacks its docstring {first_words!r}"


def test_flags_override_defaults():
    cfg = parse_train(["--env", "cartpole", "--num-envs", "8", "--no-anneal-lr", "--learning-rate", "1e-4"])
    assert (cfg.env, cfg.num_envs, cfg.anneal_lr, cfg.learning_rate) == ("cartpole", 8, False, 1e-4)
    assert cfg.num_steps == TrainConfig().num_steps


def test_a_preset_gives_the_defaults_and_flags_override_it():
    cfg = parse_train(["--preset", "memory", "--num-envs", "8"])
    assert cfg == PRESETS["memory"].replace(num_envs=8, preset="memory")
    assert parse_train(["--num-envs=8", "--preset=memory"]) == cfg, "order and = forms do not matter"


def test_flags_of_every_type_parse():
    cfg = parse_train(["--compile-mode", "reduce-overhead", "--compile-backend", "aot_eager", "--seed", "3",
                       "--run-dir", "here", "--no-progress"])
    assert (cfg.compile_mode, cfg.compile_backend, cfg.seed, cfg.run_dir, cfg.progress) == (
        "reduce-overhead", "aot_eager", 3, "here", False)


def test_unknown_preset_and_bad_choices_are_usage_errors(capsys):
    assert main(["train", "--preset", "pong"]) == 2
    assert "pong" in capsys.readouterr().err
    assert main(["train", "--precision", "fp16"]) == 2
    assert "invalid choice 'fp16'" in capsys.readouterr().err


@pytest.mark.parametrize("flags,message", [
    (["--num-steps", "100", "--seq-len", "16"], "seq_len=16 must divide num_steps=100"),
    (["--num-minibatches", "3"], "num_minibatches=3 must divide the 256 sequences"),
    (["--env", "pong"], "env='pong' is unknown"),
    (["--total-steps", "10"], "less than one rollout"),
    (["--gamma", "1.5"], "gamma=1.5 must lie in [0, 1]"),
    (["--value-lambda", "-0.1"], "value_lambda=-0.1 must lie in [0, 1]"),
    (["--num-envs", "0"], "num_envs=0 must be >= 1"),
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
        returns.append(float(out.split("mean return ")[1].split()[0]))
        assert " +- " in out and "(min " in out and ", max " in out, out
    assert returns[0] == returns[1], "same seed, same episodes"
    assert 1.0 <= returns[0] <= 500.0


def test_eval_command_names_a_missing_checkpoint(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "nowhere")]) == 2
    assert f"no checkpoint at {tmp_path / 'nowhere'}" in capsys.readouterr().err


def write_bad_checkpoints(folder):
    """Files that are not checkpoints the trainer wrote, by name."""
    import io

    import torch

    folder.mkdir()
    (folder / "empty.pt").write_bytes(b"")
    (folder / "random.pt").write_bytes(bytes(range(256)) * 8)
    whole = io.BytesIO()
    torch.save({"policy": {}, "config": {}}, whole)
    (folder / "cut.pt").write_bytes(whole.getvalue()[:200])
    torch.save(torch.zeros(3), folder / "tensor.pt")
    torch.save({"weights": torch.zeros(3)}, folder / "foreign.pt")
    return sorted(folder.iterdir())


def assert_one_line_error(capsys, *needles):
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err


def test_unreadable_checkpoints_give_one_line_errors(tmp_path, capsys):
    for path in write_bad_checkpoints(tmp_path / "bad"):
        assert main(["eval", str(path)]) == 2, path.name
        assert_one_line_error(capsys, str(path), "not a")
        assert "weights_only" not in capsys.readouterr().err
        run = tmp_path / path.stem
        run.mkdir()
        (run / "checkpoint.pt").write_bytes(path.read_bytes())
        assert main(["train", "--resume", str(run)]) == 2, path.name
        assert_one_line_error(capsys, str(run / "checkpoint.pt"))


@pytest.mark.parametrize("flags,needle", [
    (["--device", "tpu"], "device='tpu' is not a device: use auto, cpu, cuda or cuda:N"),
    (["--device", "meta"], "runs on cpu or cuda"),
    (["--config", "missing.json"], "--config missing.json: cannot read"),
    (["--preset", "memory", "--config", "c.json"], "--preset and --config both choose"),
])
def test_bad_settings_give_one_line_errors(tmp_path, monkeypatch, capsys, flags, needle):
    monkeypatch.chdir(tmp_path)
    assert main(["train", *flags, "--run-dir", "run"]) == 2
    assert_one_line_error(capsys, needle)
    assert not (tmp_path / "run").exists()


def test_a_run_dir_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "file").write_text("not a folder")
    assert main(["train", "--run-dir", str(tmp_path / "file")]) == 2
    assert_one_line_error(capsys, "is a file, not a folder")


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        main(["eval", str(tmp_path / "nowhere"), "--debug"])


def test_config_file_gives_the_defaults_and_flags_override_it(tmp_path):
    saved = {**TrainConfig(env="cartpole", num_envs=8).__dict__, "resolved_device": "cpu", "world_size": 1}
    (tmp_path / "config.json").write_text(json.dumps(saved))
    assert parse_train(["--config", str(tmp_path / "config.json"), "--seed", "7"]) == TrainConfig(
        env="cartpole", num_envs=8, seed=7)
    (tmp_path / "odd.json").write_text(json.dumps({"env": "cartpole", "colour": "blue"}))
    with pytest.raises(UsageError, match=r"unknown settings \[.colour.\]"):
        parse_train(["--config", str(tmp_path / "odd.json")])


def test_popgym_tasks_start_from_the_popgym_preset_unless_another_is_chosen():
    from recurrent_ppo.cli import parse

    def config(*argv):
        return parse(list(argv))[0].config

    cfg = config("train", "--env", "popgym/RepeatFirstEasy")
    assert (cfg.preset, cfg.previous_action, cfg.seq_len) == ("popgym", True, 64)
    assert config("train", "--env", "popgym/RepeatFirstEasy", "--no-previous-action").previous_action is False
    assert config("train", "--preset", "cartpole", "--env", "popgym/RepeatFirstEasy").preset == "cartpole"
    assert config("benchmark").preset == config("benchmark", "--suite", "popgym-hard").preset == "popgym"
    assert config("benchmark", "--suite", "memory").preset == config("train").preset == ""


def test_the_preset_a_run_started_from_is_in_its_config_json(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--env", "popgym/RepeatFirstEasy", "--num-envs", "4", "--num-steps", "16", "--seq-len", "8",
                 "--num-minibatches", "2", "--hidden-dim", "8", "--total-steps", "64", "--eval-episodes", "0",
                 "--compile-mode", "off", "--device", "cpu", "--no-progress", "--run-dir", str(run)]) == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["preset"] == "popgym" and saved["previous_action"] is True


def test_a_benchmark_of_listed_popgym_tasks_starts_from_the_popgym_preset_and_a_mixed_list_does_not():
    assert parse(["benchmark", "--suite", "popgym/RepeatFirstEasy,popgym/CountRecallEasy"])[0].config.preset == "popgym"
    assert parse(["benchmark", "--suite", "popgym/RepeatFirstEasy,memory"])[0].config.preset == ""
