"""recurrent-ppo export: the agent's step as a torch.export program (and ONNX), which replays what the eager step
computes, resets included."""

import importlib.util

import pytest
import torch

from recurrent_ppo.cli import main
from recurrent_ppo.config import TrainConfig
from recurrent_ppo.envs import make_env
from recurrent_ppo.export import load_exported, load_step
from recurrent_ppo.trainer import Trainer

NUM_ENVS = 4
ONNX = all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxscript"))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """masked-choice (a Dict observation with its action mask, MultiDiscrete actions), normalized observations,
    the previous action and a GRU: every part the exported step folds in."""
    run_dir = tmp_path_factory.mktemp("export") / "run"
    cfg = TrainConfig(env="masked-choice", num_envs=NUM_ENVS, num_steps=16, seq_len=8, total_steps=NUM_ENVS * 16 * 2,
                      hidden_dim=16, num_layers=2, core="gru", num_minibatches=2, update_epochs=1, eval_episodes=0,
                      progress=False, device="cpu", compile_mode="off", normalize_obs=True, previous_action=True,
                      run_dir=str(run_dir))
    Trainer(cfg).train()
    return run_dir


def replay(step, exported, steps: int = 100):
    """Step the masked-choice env for `steps` steps with the eager step's actions, the exported step fed the same
    observations and episode starts (true where an episode ended, and at steps 0, 37 and 61 for all envs)."""
    torch.manual_seed(0)
    env = make_env("masked-choice", NUM_ENVS, "cpu")
    obs = env.reset()
    eager_state, exported_state = step.initial_state(NUM_ENVS), exported.initial_state()
    starts = torch.ones(NUM_ENVS, dtype=torch.bool)
    resets = 0
    for t in range(steps):
        if t in (37, 61):
            starts = torch.ones(NUM_ENVS, dtype=torch.bool)
        resets += int(starts.sum())
        with torch.inference_mode():
            action, eager_state = step(obs, eager_state, starts)
        exported_action, exported_state = exported(obs, exported_state, starts)
        assert torch.equal(exported_action, action), f"step {t}"
        for name, ours, theirs in zip(step.state_names, exported_state, eager_state, strict=True):
            torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0, msg=lambda m: f"{name} at step {t}: {m}")
        result = env.step(action)
        obs, starts = result.obs, result.terminated | result.truncated
    assert resets > 2 * NUM_ENVS, "the replay crosses episode starts"


def test_the_exported_program_replays_the_eager_step_with_resets(run, tmp_path, capsys):
    out = tmp_path / "agent.pt2"
    assert main(["export", str(run), "--out", str(out), "--batch", str(NUM_ENVS)]) == 0
    assert str(out) in capsys.readouterr().out
    exported = load_exported(out)
    assert exported.metadata["batch_size"] == NUM_ENVS and exported.metadata["env"] == "masked-choice"
    assert list(exported.metadata["state"]) == ["hidden_h", "previous_action"]
    step, _ = load_step(run)
    replay(step, exported)
    # The documented use needs nothing but torch: the program's module, the state zeros of the listed shapes.
    module = torch.export.load(out).module()
    obs = make_env("masked-choice", NUM_ENVS, "cpu").reset()
    action, state = module(obs, exported.initial_state(), torch.ones(NUM_ENVS, dtype=torch.bool))
    assert action.shape == (NUM_ENVS, 2) and len(state) == 2


def test_export_writes_agent_pt2_into_the_run_folder_by_default(run, capsys):
    assert main(["export", str(run / "checkpoint.pt")]) == 0
    exported = load_exported(run / "agent.pt2")
    assert exported.metadata["batch_size"] == 1
    assert exported.metadata["observation"]["action_mask"] == {"shape": [1, 7], "dtype": "bool"}


def test_an_export_to_a_file_not_ending_in_pt2_is_refused(run, tmp_path, capsys):
    assert main(["export", str(run), "--out", str(tmp_path / "agent.onnx"), "--onnx"]) == 2
    assert "must end in .pt2" in capsys.readouterr().err
    assert main(["export", str(run), "--batch", "0"]) == 2
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(ONNX, reason="onnx is installed: the export succeeds")
def test_an_onnx_export_without_the_onnx_extra_names_what_to_install(run, tmp_path, capsys):
    assert main(["export", str(run), "--out", str(tmp_path / "agent.pt2"), "--onnx"]) == 2
    assert "pip install 'recurrent-ppo[onnx]'" in capsys.readouterr().err
    assert not (tmp_path / "agent.pt2").exists(), "nothing is written before the check"


@pytest.mark.skipif(not ONNX, reason="needs the onnx extra (onnx, onnxscript)")
def test_the_onnx_file_computes_what_the_eager_step_computes(run, tmp_path):
    import numpy as np
    import onnx
    from onnx.reference import ReferenceEvaluator

    out = tmp_path / "agent.pt2"
    assert main(["export", str(run), "--out", str(out), "--batch", str(NUM_ENVS), "--onnx"]) == 0
    model = onnx.load(str(out.with_suffix(".onnx")))
    onnx.checker.check_model(model)
    names = [i.name for i in model.graph.input]
    assert names == ["obs/obs", "obs/action_mask", "hidden_h", "previous_action", "episode_start"], names
    step, _ = load_step(run)
    torch.manual_seed(0)
    obs = make_env("masked-choice", NUM_ENVS, "cpu").reset()
    state = step.initial_state(NUM_ENVS)
    starts = torch.tensor([True, False, True, False])
    with torch.inference_mode():
        action, next_state = step(obs, state, starts)
    feeds = dict(zip(names, [obs["obs"].numpy(), obs["action_mask"].numpy(), *(x.numpy() for x in state),
                             starts.numpy()]))
    outputs = ReferenceEvaluator(model).run(None, feeds)
    np.testing.assert_array_equal(outputs[0], action.numpy())
    for ours, theirs in zip(outputs[1:], next_state, strict=True):
        np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-5)
