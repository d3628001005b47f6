"""NaN/Inf detection: the first bad env and step per field, recorded on the device, compiled as eager; a run whose
env or update goes non-finite stops naming it and keeps the last good checkpoint."""

import numpy as np
import pytest
import torch

from recurrent_ppo.checkpoint import read_checkpoint
from recurrent_ppo.cli import main
from recurrent_ppo.config import TrainConfig
from recurrent_ppo.envs import CartPole
from recurrent_ppo.finite import EnvOutputWatch, NonFiniteError, check_update
from recurrent_ppo.trainer import Trainer
from tests.helpers import TINY


def drive(watch, record, steps):
    """Record `steps` (a list of (reward, obs) pairs) at step indices 0, 1, ..."""
    for index, (reward, obs) in enumerate(steps):
        record(torch.tensor([index]), (reward, obs))


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "aot_eager"])
def test_first_non_finite_env_and_step_per_field(compiled):
    watch = EnvOutputWatch(("reward", "observation"), "cpu")
    record = torch.compile(watch.record, fullgraph=True, backend="aot_eager") if compiled else watch.record
    good_r, good_o = torch.zeros(4), torch.zeros(4, 2, 3)
    bad_r = good_r.clone()
    bad_r[2] = float("inf")
    bad_o = good_o.clone()
    bad_o[3, 1, 0] = float("nan")
    later_r = good_r.clone()
    later_r[0] = float("nan")
    drive(watch, record, [(good_r, good_o), (bad_r, good_o), (later_r, bad_o)])
    assert watch.first.tolist() == [[2, 1], [3, 2]], "the first occurrence, lowest env, per field"
    with pytest.raises(NonFiniteError, match="non-finite reward in iteration 5, at env 2, rollout step 1"):
        watch.check(5)
    watch.reset()
    drive(watch, record, [(good_r, good_o)])
    watch.check(6)


def test_update_check_names_the_non_finite_terms():
    check_update({"loss": 1.0, "grad_norm": 2.0}, 3)
    with pytest.raises(NonFiniteError, match=r"iteration 3 went non-finite \(loss=nan, grad_norm=inf\)"):
        check_update({"loss": float("nan"), "entropy": 0.5, "grad_norm": float("inf")}, 3)


# --- through a run ------------------------------------------------------------------------------------------

class NanAfter(CartPole):
    """CartPole whose reward (or observation) turns NaN/Inf from the `after`-th step on."""

    def __init__(self, num_envs, device, *, field, value, after):
        super().__init__(num_envs, device)
        self.field, self.value, self.after = field, value, after
        self.calls = torch.zeros((1,), dtype=torch.int64, device=self.device)

    def step(self, actions):
        result = super().step(actions)
        self.calls += 1
        poisoned = (self.calls >= self.after) & (torch.arange(self.num_envs, device=self.device) == 1)
        if self.field == "reward":
            return result._replace(reward=torch.where(poisoned, self.value, result.reward))
        return result._replace(obs=torch.where(poisoned[:, None], self.value, result.obs))

@pytest.mark.parametrize("field,value,needle", [
    ("reward", float("nan"), "non-finite reward"), ("reward", float("inf"), "non-finite reward"),
    ("observation", float("nan"), "non-finite observation"),
])
def test_a_device_env_going_non_finite_stops_the_run_and_keeps_the_last_good_checkpoint(
        tmp_path, field, value, needle):
    def nan_cartpole(n, device):
        return NanAfter(n, device, field=field, value=value, after=16 * 3 + 5)

    cfg = TrainConfig(num_envs=4, num_steps=16, seq_len=4, num_minibatches=2, update_epochs=2,
                      hidden_dim=8, total_steps=4 * 16 * 6, checkpoint_every=1, eval_episodes=0, progress=False,
                      device="cpu", compile_mode="off", run_dir=str(tmp_path / "run"))
    with pytest.raises(NonFiniteError, match=f"{needle} in iteration 3, at env 1, rollout step 4"):
        Trainer(cfg, env=nan_cartpole).train()
    saved = read_checkpoint(tmp_path / "run")
    assert saved["iteration"] == 3, "the checkpoint is the last one before the poisoned iteration"
    assert all(torch.isfinite(t).all() for t in saved["policy"].values())

def non_finite_env(gym, field, value):
    """A gymnasium env whose 7th step returns `value` (NaN or Inf) as its reward or in its observation."""

    class NonFiniteEnv(gym.Env):
        observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        action_space = gym.spaces.Discrete(2)

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            self.steps = 0
            return np.zeros(2, np.float32), {}

        def step(self, action):
            self.steps += 1
            bad = self.steps == 7
            obs = np.full(2, value if bad and field == "observation" else 0.0, np.float32)
            return obs, value if bad and field == "reward" else 1.0, self.steps >= 20, False, {}

    return NonFiniteEnv

@pytest.mark.parametrize("field,value", [("reward", float("nan")), ("reward", float("inf")),
                                         ("observation", float("nan"))])
def test_a_gymnasium_env_going_non_finite_stops_the_run(tmp_path, capsys, field, value):
    gym = pytest.importorskip("gymnasium")
    env_id = f"NonFinite{field.title()}{'Nan' if value != value else 'Inf'}-v0"
    gym.register(env_id, entry_point=non_finite_env(gym, field, value), disable_env_checker=True)
    assert main(["train", *TINY[2:], "--env", f"gym:{env_id}", "--compile-mode", "off", "--total-steps", "128",
                 "--no-progress", "--run-dir", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert f"non-finite {field} in iteration 0, at env 0, rollout step 6" in err and "Traceback" not in err, err
    assert "no checkpoint was written" in err
    assert not (tmp_path / "run" / "checkpoint.pt").exists()

def test_the_env_output_check_can_be_turned_off(tmp_path):
    env = NanAfter(4, "cpu", field="observation", value=float("nan"), after=3)
    cfg = TrainConfig(num_envs=4, num_steps=16, seq_len=4, num_minibatches=2, update_epochs=1,
                      hidden_dim=8, total_steps=4 * 16, eval_episodes=0, progress=False, device="cpu",
                      compile_mode="off", run_dir=str(tmp_path / "run"), check_env_outputs=False)
    with pytest.raises(NonFiniteError, match="update of iteration 0 went non-finite"):
        Trainer(cfg, env=env).train()  # the loss check stays
