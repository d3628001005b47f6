"""Envs of one's own: by import path on the command line (a torch device env, a wrapped gymnasium env), handed to
the Trainer as objects, and the refusals that say how to fix a name or a space."""

import json
import sys
from pathlib import Path

import pytest
import torch

from recurrent_ppo.checkpoint import read_checkpoint
from recurrent_ppo.cli import main
from recurrent_ppo.config import TrainConfig
from recurrent_ppo.envs import make_env
from recurrent_ppo.trainer import Trainer

pytest.importorskip("gymnasium")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
TINY = ["--num-envs", "4", "--num-steps", "16", "--seq-len", "8", "--num-minibatches", "2", "--update-epochs", "1",
        "--hidden-dim", "16", "--device", "cpu", "--compile-mode", "off", "--no-progress"]


@pytest.fixture
def in_examples(monkeypatch):
    """The current directory is examples/, as a user's beside their env module; sys.path is restored after."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.chdir(EXAMPLES)


def tiny_config(tmp_path, **changes) -> TrainConfig:
    return TrainConfig(num_envs=4, num_steps=16, seq_len=8, num_minibatches=2, update_epochs=1, hidden_dim=16,
                       total_steps=4 * 16 * 2, eval_episodes=0, progress=False, device="cpu", compile_mode="off",
                       run_dir=str(tmp_path / "run")).replace(**changes)


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("env,resumed", [
    ("device_env:RepeatFirst", "exactly where it stopped"),
    ("gym:tests.gym_envs:mission_dropped", "with fresh episodes"),
], ids=["device-env", "wrapped-gym-env"])
def test_an_env_named_by_import_path_trains_evaluates_and_resumes(tmp_path, in_examples, capsys, env, resumed):
    """A module beside the user (examples/device_env.py, the current directory) or on sys.path (the tests
    package): config.json keeps the import path, from which `eval` and `--resume` rebuild the env."""
    run = tmp_path / "run"
    assert main(["train", "--env", env, *TINY, "--total-steps", str(4 * 16 * 2), "--eval-episodes", "2",
                 "--run-dir", str(run)]) == 0, capsys.readouterr().err
    assert json.loads((run / "config.json").read_text())["env"] == env
    capsys.readouterr()
    assert main(["eval", str(run), "--episodes", "3", "--device", "cpu"]) == 0, capsys.readouterr().err
    assert capsys.readouterr().out.startswith(f"{env}: deterministic evaluation over 3 episodes")
    assert main(["train", "--resume", str(run), "--total-steps", str(4 * 16 * 3)]) == 0, capsys.readouterr().err
    assert f"resuming after iteration 2 {resumed}" in capsys.readouterr().out
    assert [row["iteration"] for row in rows(run)] == [0, 1, 2]


def test_the_trainer_takes_a_factory_and_names_it_by_import_path_for_eval(tmp_path, in_examples, capsys):
    """A class is a factory (num_envs, device): it builds the training and the evaluation env, and config.json
    names it so that `eval` rebuilds it. A lambda cannot be imported back: eval asks for it again."""
    sys.path.insert(0, str(EXAMPLES))
    from device_env import RepeatFirst

    summary = Trainer(tiny_config(tmp_path, eval_episodes=2), env=RepeatFirst).train()
    assert 0.0 <= summary["eval_return_mean"] <= 1.0
    assert read_checkpoint(tmp_path / "run")["config"]["env"] == "device_env:RepeatFirst"
    assert main(["eval", str(tmp_path / "run"), "--episodes", "2", "--device", "cpu"]) == 0

    trainer = Trainer(tiny_config(tmp_path, run_dir=str(tmp_path / "lambda"), eval_episodes=2),
                      env=lambda num_envs, device: RepeatFirst(num_envs, device, length=4))
    assert trainer.cfg.env.startswith("<factory tests.test_env_import.")
    trainer.train()
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "lambda"), "--device", "cpu"]) == 2
    assert "was handed to the Trainer as a Python object" in capsys.readouterr().err


def test_the_trainer_takes_an_instance_that_is_passed_again_to_resume(tmp_path, in_examples, capsys):
    """An instance trains without evaluation (which needs an env of its own), its config names it by a marker
    that `--resume` refuses asking for it again, and from Python it resumes when handed over again."""
    sys.path.insert(0, str(EXAMPLES))
    from device_env import RepeatFirst

    with pytest.raises(ValueError, match="evaluation needs an env of its own.*set eval_episodes=0 and eval_every=0"):
        Trainer(tiny_config(tmp_path, eval_episodes=5), env=RepeatFirst(4, "cpu"))
    trainer = Trainer(tiny_config(tmp_path), env=RepeatFirst(4, "cpu"))
    trainer.train()
    assert trainer.cfg.env == "<instance of device_env.RepeatFirst>"
    with pytest.raises(ValueError, match="no evaluation env"):
        trainer.evaluate(1)
    capsys.readouterr()
    assert main(["train", "--resume", str(tmp_path / "run"), "--total-steps", str(4 * 16 * 3)]) == 2
    assert "pass it again (Trainer(cfg, env=...), then restore()" in capsys.readouterr().err

    state = read_checkpoint(tmp_path / "run")
    again = Trainer(TrainConfig(**state["config"]).replace(total_steps=4 * 16 * 3), env=RepeatFirst(4, "cpu"))
    again.restore(state)
    assert again.train()["global_step"] == 4 * 16 * 3


def test_a_handed_over_env_that_breaks_the_contract_is_refused_naming_what_is_missing(tmp_path):
    gym = pytest.importorskip("gymnasium")

    class Incomplete:
        num_envs, device, steps_on_host = 4, torch.device("cpu"), False
        observation_space, action_space = gym.spaces.Box(0, 1, (3,)), gym.spaces.Discrete(2)

        def reset(self):
            ...

    with pytest.raises(ValueError, match=r"\(Incomplete\) does not fit the VectorEnv contract .*no step\(\) method; no "
                                         r"max_episode_steps attribute .*observation_space Box.* is not made of "
                                         r"recurrent_ppo.spaces .*unsupported space Discrete\(2\) as the action space"):
        Trainer(tiny_config(tmp_path), env=Incomplete())
    with pytest.raises(ValueError, match=r"num_envs=4, but the run steps 8 \(its num_envs setting\)"):
        make_env("tests.test_env_import:four_cartpoles", 8, "cpu")


def four_cartpoles(num_envs, device):
    """A factory that ignores the number of envs asked for."""
    from recurrent_ppo.envs import CartPole

    return CartPole(4, device)


@pytest.mark.parametrize("env,message", [
    ("no_such_module:Env", r"env 'no_such_module:Env': there is no module 'no_such_module' to import .*run from the "
                           r"folder that holds it"),
    ("device_env:RepeatFrist", r"module 'device_env' \(.*device_env.py\) has no attribute 'RepeatFrist' \(close: "
                               r"RepeatFirst\); the env must name a VectorEnv class or a factory \(num_envs, device\)"),
    ("tests.gym_envs:MISSION_SPACE", r"tests.gym_envs:MISSION_SPACE is a Dict, not a VectorEnv class or a factory"),
    ("tests.gym_envs:with_mission", r"tests.gym_envs.with_mission\(\) cannot be called with 2 argument\(s\)"),
    ("gym:CartPol-v1", r"gymnasium has no env 'CartPol-v1' registered; if a package registers it when imported, name "
                       r"the package too: gym:<package>:CartPol-v1 .*registered ids close to it: CartPole-v1"),
    ("gym:tests.gym_envs:CartPol-v1", r"module 'tests.gym_envs' imported, but registered no env 'CartPol-v1' .*close "
                                      r"to it: CartPole-v1"),
    ("gym:no_such_package:Thing-v0", r"there is no module 'no_such_package' to import"),
    ("gym:tests.gym_envs:with_mission", r"unsupported space Text\(.*\) at 'mission' of the observation space: .*; "
                                        r"drop \['mission'\] with gymnasium.wrappers.FilterObservation\(env, "
                                        r"\['pos'\]\) .*train it as --env gym:<module>:<function>"),
], ids=["no-module", "no-attribute", "not-callable", "wrong-signature", "unknown-gym-id", "unknown-id-of-a-module",
        "no-gym-module", "text-leaf"])
def test_an_env_that_cannot_be_made_is_refused_saying_what_to_do(tmp_path, in_examples, capsys, env, message):
    """One line, exit 2 (a usage error), before anything is written."""
    assert main(["train", "--env", env, *TINY, "--total-steps", "64", "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert __import__("re").search(message, err), err
    assert not (tmp_path / "run").exists()
