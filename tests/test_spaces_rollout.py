"""Every head, encoder kind and core through the rollout, the buffer and the update: rollout log-probs equal
evaluate_actions', masks are never broken, compiled steps neither break graphs nor recompile."""

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

from recurrent_ppo.buffer import RolloutBuffer
from recurrent_ppo.compile import compile_fn
from recurrent_ppo.episodes import EpisodeTracker
from recurrent_ppo.models import RecurrentPolicy
from recurrent_ppo.ppo import PPOUpdater
from recurrent_ppo.rollout import Evaluator, RolloutCollector
from recurrent_ppo.spaces import Box, Dict, Discrete, MultiBinary, MultiDiscrete, Tuple, with_action_mask
from tests.helpers import RandomEnv, assert_close

CPU = torch.device("cpu")
HEADS = {
    "categorical": (Box((3,)), Discrete(3)),
    "categorical-masked": (with_action_mask(Discrete(5), Discrete(4)), Discrete(4)),
    "multidiscrete-masked": (with_action_mask(Box((3,)), MultiDiscrete((2, 3), (0, 1))), MultiDiscrete((2, 3), (0, 1))),
    "gaussian": (Box((3,)), Box((2,), -1.0, 1.0)),
}
EVERY_LEAF = Dict((("x", Box((2,))), ("count", Box((2,), 0, 9, "int64")), ("pick", Discrete(3, start=1)),
                   ("grid", MultiDiscrete((2, 3))), ("flags", MultiBinary((2, 2))),
                   ("image", Box((6, 5, 3), 0, 255, "uint8")), ("inner", Tuple((Discrete(2), Box((1,)))))))
ENCODERS = {"every-leaf-dict": EVERY_LEAF, "discrete-alone": Discrete(6, start=1),
            "image-alone": Box((3, 6, 6), 0, 255, "uint8"), "box-2d": Box((2, 3))}
CORES = ["lstm", "gru"]


pytestmark = pytest.mark.usefixtures("fresh_dynamo")


class Parts:
    """Policy, env, buffer, collector, updater and evaluator of one spec, compiled in `mode`."""

    def __init__(self, obs_space, action_space, core, mode="off", backend="aot_eager", num_envs=4, num_steps=8,
                 **env_args):
        self.policy = RecurrentPolicy(obs_space, action_space, hidden_dim=8, num_layers=1, core=core)
        self.env = RandomEnv(num_envs, obs_space, action_space, **env_args)
        self.buffer = RolloutBuffer.for_policy(self.policy, num_envs, num_steps, CPU)
        compiled = dict(compile_mode=mode, compile_backend=backend)
        self.collector = RolloutCollector(self.policy, self.env, self.buffer, EpisodeTracker(num_envs, CPU),
                                          **compiled)
        self.updater = PPOUpdater(self.policy, torch.optim.Adam(self.policy.parameters(), lr=1e-3), **compiled)
        self.evaluator = Evaluator(self.policy, RandomEnv(num_envs, obs_space, action_space), **compiled)

    def iteration(self):
        self.buffer.compute_advantages(self.collector.collect(), 0.99, 0.95)
        losses = self.updater.update(self.buffer, seq_len=4, num_minibatches=2, epochs=1)
        self.collector.check()
        self.evaluator.evaluate(4)
        return losses


CASES = [*(pytest.param(obs_space, action_space, core, id=f"{head}-{core}")
           for head, (obs_space, action_space) in HEADS.items() for core in CORES),
         *(pytest.param(obs_space, Discrete(2), "lstm", id=f"{encoder}-lstm")
           for encoder, obs_space in ENCODERS.items())]


@pytest.mark.parametrize("obs_space,action_space,core", CASES)
def test_rollout_log_probs_are_what_evaluate_actions_computes(obs_space, action_space, core):
    """Ratio 1 before any update: the rollout's per-step log-probs and values (with resets, masks, every obs
    leaf as the buffer stored it) are what BPTT over the stored sequences computes."""
    parts = Parts(obs_space, action_space, core, num_steps=16)
    parts.collector.collect()
    parts.collector.check()
    buffer = parts.buffer
    assert buffer.episode_starts[:, 1:].any(), "the check must cross episode starts"
    for batch in buffer.get_batched_sequences(8, 2):
        with torch.no_grad():
            out = parts.policy.evaluate_actions(batch.obs, batch.hidden, batch.episode_starts, batch.actions)
        ratio = (out.log_prob - batch.log_probs).exp()
        assert_close(ratio, torch.ones_like(ratio), "rollout/evaluate ratio", rtol=0, atol=1e-5)
        assert_close(out.value, batch.values, "values", rtol=1e-5, atol=1e-5)
        assert torch.isfinite(out.entropy).all()
    if parts.policy.masked:
        assert int(parts.env.illegal_taken) == 0, "a masked action was taken"


# Each head, encoder kind and core once (the categorical LSTM and GRU on CartPole: tests/test_compile.py).
COMPILED_CASES = [
    pytest.param(*HEADS["categorical-masked"], "gru", id="categorical-masked-gru"),
    pytest.param(*HEADS["multidiscrete-masked"], "lstm", id="multidiscrete-masked-lstm"),
    pytest.param(*HEADS["gaussian"], "gru", id="gaussian-gru"),
    pytest.param(EVERY_LEAF, Discrete(2), "lstm", id="every-leaf-dict-lstm"),
    pytest.param(Discrete(6, start=1), MultiDiscrete((2, 2)), "gru", id="discrete-alone-gru"),
]


@pytest.mark.parametrize("obs_space,action_space,core", COMPILED_CASES)
def test_no_graph_breaks_nor_recompiles_across_iterations(obs_space, action_space, core):
    """Graph breaks (fullgraph=True raises on one) and recompiles are Dynamo's: the eager backend shows them
    and runs the captured graphs ten times faster than aot_eager; AOTAutograd (and inductor) run in the
    per-head cases below and in tests/test_compile.py."""
    parts = Parts(obs_space, action_space, core, mode="default", backend="eager")
    parts.iteration()
    graphs = counters["stats"]["unique_graphs"]
    assert graphs >= 4, "rollout step, last value, loss and evaluation step should each be compiled"
    with torch._dynamo.config.patch(error_on_recompile=True):
        parts.iteration()
    assert counters["stats"]["unique_graphs"] == graphs
    assert not counters["recompiles"], dict(counters["recompiles"])


@pytest.mark.parametrize("head,backend", [
    pytest.param("multidiscrete-masked", "inductor", marks=pytest.mark.slow(seconds=25, together="inductor")),
    ("gaussian", "aot_eager"),
])
def test_compiled_heads_compute_what_eager_does(head, backend):
    """Each head beyond the categorical (tests/test_compile.py): the policy step and BPTT with its backward,
    compiled, give eager's numbers and gradients, and a second call recompiles nothing. The masked head under
    inductor, whose generated code computes the masked, packed logits and their sampling; the Gaussian through
    AOTAutograd's graphs alone: its elementwise math would cost a cold C++ compile of its own and checks no
    contract of ours."""
    obs_space, action_space = HEADS[head]
    parts = Parts(obs_space, action_space, "lstm", num_steps=8)
    parts.collector.collect()
    batch = next(parts.buffer.get_batched_sequences(4, 1))
    policy = parts.policy
    evaluate = compile_fn(policy.evaluate_actions, "default", backend)
    get_action = compile_fn(policy.get_action, "default", backend)
    outputs = {}
    for name, fn in (("eager", policy.evaluate_actions), ("compiled", evaluate)):
        policy.zero_grad()
        out = fn(batch.obs, batch.hidden, batch.episode_starts, batch.actions)
        (out.log_prob.sum() + out.value.sum() + out.entropy.sum()).backward()
        outputs[name] = (out, {n: p.grad.clone() for n, p in policy.named_parameters()})
    for field in ("log_prob", "value", "entropy"):
        assert_close(getattr(outputs["compiled"][0], field), getattr(outputs["eager"][0], field), field,
                     rtol=1e-5, atol=1e-5)
    for name, grad in outputs["eager"][1].items():
        assert_close(outputs["compiled"][1][name], grad, f"grad of {name}", rtol=1e-4, atol=1e-5)
    collector = parts.collector
    with torch.inference_mode():
        for deterministic in (False, True):
            act = get_action(collector.obs, collector.hidden, collector.episode_starts, deterministic)
            assert act.action.shape == parts.buffer.actions[:, 0].shape
        with torch._dynamo.config.patch(error_on_recompile=True):
            get_action(collector.obs, collector.hidden, collector.episode_starts, True)
    assert not counters["recompiles"], dict(counters["recompiles"])


@pytest.mark.parametrize("head", ["categorical-masked", "multidiscrete-masked"])
def test_a_mask_with_no_legal_action_fails_the_run_without_nan(head):
    obs_space, action_space = HEADS[head]
    parts = Parts(obs_space, action_space, "lstm", empty_mask_at=3)
    parts.collector.collect()
    assert torch.isfinite(parts.buffer.log_probs).all(), "no NaN reaches the buffer"
    with pytest.raises(RuntimeError, match=r"an observation's action_mask allowed no action .* the env must leave "
                                           r"at least one legal action"):
        parts.collector.check()


def test_masks_of_the_wrong_shape_or_dtype_are_refused():
    obs_space, action_space = HEADS["categorical-masked"]
    with pytest.raises(ValueError, match=r"the observation's 'action_mask' is MultiBinary\(shape=\(5,\)\); the action "
                                         r"space Discrete\(n=4, start=0\) needs MultiBinary\(shape=\(4,\)\)"):
        RecurrentPolicy(with_action_mask(Discrete(5), Discrete(5)), Discrete(4))
    with pytest.raises(ValueError, match="cannot be masked: masks apply to Discrete and MultiDiscrete actions"):
        RecurrentPolicy(Dict((("obs", Box((2,))), ("action_mask", MultiBinary((2,))))), Box((2,), -1.0, 1.0))
    policy = RecurrentPolicy(obs_space, action_space, hidden_dim=8)
    obs = {"obs": torch.zeros(3, dtype=torch.long), "action_mask": torch.ones(3, 4)}  # float, not bool
    with torch.inference_mode(), pytest.raises(ValueError, match=r"action_mask must be bool \[..., 4\] \(true = "
                                                                 r"legal\) for Discrete\(n=4, start=0\), got "
                                                                 r"torch.float32 \[3, 4\]"):
        policy.get_action(obs, policy.initial_hidden(3), torch.zeros(3, dtype=torch.bool))
    env = RandomEnv(3, obs_space, action_space)
    env.mask = torch.ones(3, 6, dtype=torch.bool)  # wider than the declared MultiBinary((4,))
    with pytest.raises(ValueError, match=r"RandomEnv.reset\(\): observation 'action_mask' has per-env shape \(6,\), "
                                         r"dtype torch.bool; its space MultiBinary\(shape=\(4,\)\) needs shape \(4,\)"):
        RolloutCollector(policy, env, RolloutBuffer.for_policy(policy, 3, 8, CPU), EpisodeTracker(3, CPU))


def test_an_env_of_other_spaces_is_refused():
    policy = RecurrentPolicy(Box((3,)), Discrete(3), hidden_dim=8)
    env = RandomEnv(2, Box((3,)), Discrete(4))
    with pytest.raises(ValueError, match=r"the policy was built for the action_space Discrete\(n=3, start=0\), but "
                                         r"the env has Discrete\(n=4, start=0\)"):
        Evaluator(policy, env)
