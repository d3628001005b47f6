"""Configuration files and checkpoints' saved configurations are checked like flags: each value against its
field's type, before anything is built or written, with one line naming the file, the setting and what came."""

import dataclasses
import json

import pytest
import torch

from recurrent_ppo.cli import main
from recurrent_ppo.config import TrainConfig, config_from_dict

TINY = dict(env="cartpole", num_envs=4, num_steps=16, seq_len=4, num_minibatches=2, update_epochs=2, hidden_dim=8,
            total_steps=64, device="cpu", compile_mode="off", eval_episodes=0, progress=False)


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("name,value,expected", [
    ("anneal_lr", "no", "anneal_lr must be a bool, got the str 'no'"),
    ("num_envs", "4", "num_envs must be an int, got the str '4'"),
    ("hidden_dim", 32.5, "hidden_dim must be an int, got the float 32.5"),
    ("num_envs", True, "num_envs must be an int, got the bool True"),
    ("learning_rate", False, "learning_rate must be a float, got the bool False"),
    ("precision", "fp16", "precision must be one of 'fp32', 'tf32', 'bf16', got the str 'fp16'"),
    ("target_kl", "0.01", "target_kl must be a float or None, got the str '0.01'"),
], ids=["str-for-bool", "str-for-int", "float-for-int", "bool-for-int", "bool-for-float", "bad-literal",
        "str-for-optional-float"])
def test_a_config_file_with_a_value_of_the_wrong_type_is_refused_naming_file_setting_and_value(
        tmp_path, capsys, name, value, expected):
    path, run = tmp_path / "config.json", tmp_path / "run"
    path.write_text(json.dumps({**TINY, "run_dir": str(run), name: value}))
    assert main(["train", "--config", str(path)]) == 2
    assert f"recurrent-ppo train: --config {path}: {expected}" in one_line(capsys)
    assert not run.exists(), "nothing was written"


def test_config_json_is_written_back_with_each_settings_type(tmp_path):
    path, run = tmp_path / "config.json", tmp_path / "run"
    path.write_text(json.dumps({**TINY, "run_dir": str(run), "learning_rate": 1, "time_budget": 0, "target_kl": None,
                                "resolved_device": "cpu", "world_size": 1}))
    assert main(["train", "--config", str(path)]) == 0
    written = json.loads((run / "config.json").read_text())
    assert written["learning_rate"] == 1.0 and isinstance(written["learning_rate"], float), written
    assert isinstance(written["time_budget"], float) and written["target_kl"] is None, written
    fields = {field.name for field in dataclasses.fields(TrainConfig)}
    assert config_from_dict({k: v for k, v in written.items() if k in fields}, "config.json") == TrainConfig(
        **{**TINY, "run_dir": str(run), "learning_rate": 1.0})


def test_a_tampered_checkpoint_configuration_is_refused_by_resume_and_eval(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *(f"--{k.replace('_', '-')}={v}" for k, v in TINY.items() if k != "progress"),
                 "--no-progress", "--run-dir", str(run)]) == 0
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    state["config"]["anneal_lr"] = "no"
    torch.save(state, run / "checkpoint.pt")
    capsys.readouterr()
    expected = f"the configuration saved in {run / 'checkpoint.pt'}: anneal_lr must be a bool, got the str 'no'"
    assert main(["train", "--resume", str(run), "--total-steps", "128"]) == 2
    assert f"recurrent-ppo train: {expected}" in one_line(capsys)
    assert main(["eval", str(run), "--episodes", "1", "--device", "cpu"]) == 2
    assert f"recurrent-ppo eval: {expected}" in one_line(capsys)
    state["config"] = {**state["config"], "anneal_lr": True, "colour": "blue"}
    torch.save(state, run / "checkpoint.pt")
    assert main(["train", "--resume", str(run), "--total-steps", "128"]) == 2
    assert "unknown settings ['colour']" in one_line(capsys)
