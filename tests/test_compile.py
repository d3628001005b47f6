"""Compiled hot paths: no graph breaks, no recompiles after the first iteration, and the inference-mode
contract of the seed ticket proven under torch.compile (inductor on CPU; reduce-overhead on GPU)."""

import copy

import pytest
import torch
import torch._dynamo
from recurrent_ppo.kernels.gae import gae_triton
from torch._dynamo.utils import counters

from recurrent_ppo.buffer import RolloutBuffer
from recurrent_ppo.compile import compile_fn
from recurrent_ppo.config import TrainConfig
from recurrent_ppo.envs import CartPole
from recurrent_ppo.episodes import EpisodeTracker
from recurrent_ppo.models import RecurrentPolicy
from recurrent_ppo.ppo import PPOSettings, PPOUpdater, ppo_loss
from recurrent_ppo.rollout import Evaluator, RolloutCollector, RolloutSettings
from recurrent_ppo.spaces import Box, Discrete
from recurrent_ppo.trainer import Trainer
from tests.helpers import assert_close

LOSS = PPOSettings().loss_terms()


pytestmark = pytest.mark.usefixtures("fresh_dynamo")


def small_policy(core="lstm", device="cpu"):
    return RecurrentPolicy(Box((2,)), Discrete(2), hidden_dim=16, num_layers=2, core=core).to(device)


def small_parts(num_envs=4, num_steps=8, device="cpu", core="lstm"):
    policy = small_policy(core, device)
    env = CartPole(num_envs, device, stateless=True)
    buffer = RolloutBuffer.for_policy(policy, num_envs, num_steps, device)
    return policy, env, buffer


def filled_buffer(policy, env, buffer, **collector_args):
    collector = RolloutCollector(policy, env, buffer, EpisodeTracker(env.num_envs, env.device), **collector_args)
    buffer.compute_advantages(collector.collect(), 0.99, 0.95)
    return buffer


def explain(fn, *args):
    result = torch._dynamo.explain(fn)(*args)
    assert result.graph_break_count == 0, [str(r) for r in result.break_reasons]
    assert result.graph_count == 1
    return result


# --- zero graph breaks (dynamo's explain, eager backend: fast) ---------------------------------------------

def test_get_action_and_get_value_have_no_graph_breaks():
    policy, env, _ = small_parts()
    obs, starts = torch.randn(4, 2), torch.tensor([True, False, True, False])
    hidden = policy.initial_hidden(4)
    with torch.inference_mode():
        explain(policy.get_action, obs, hidden, starts)
        explain(lambda o, h, s: policy.get_action(o, h, s, deterministic=True), obs, hidden, starts)
        explain(policy.get_value, obs, hidden, starts)


def test_evaluate_actions_and_ppo_loss_have_no_graph_breaks():
    policy, env, buffer = small_parts()
    batch = next(filled_buffer(policy, env, buffer).get_batched_sequences(4, 2))

    def loss(batch):
        out = policy.evaluate_actions(batch.obs, batch.hidden, batch.episode_starts, batch.actions)
        return ppo_loss(out, batch, **LOSS).loss

    explain(loss, batch)
    updater = PPOUpdater(policy, torch.optim.Adam(policy.parameters()))
    explain(updater._loss, batch)


def test_rollout_and_evaluation_steps_have_no_graph_breaks():
    policy, env, buffer = small_parts()
    collector = RolloutCollector(policy, env, buffer, EpisodeTracker(4, torch.device("cpu")))
    evaluator = Evaluator(policy, CartPole(4, stateless=True))
    with torch.inference_mode():
        explain(collector._step, collector.obs, collector.hidden, collector.episode_starts)
        explain(evaluator._step, collector.obs, collector.hidden, collector.episode_starts)


def test_gae_op_has_no_graph_breaks():
    n, t = 5, 7
    args = (torch.randn(n, t), torch.randn(n, t), torch.rand(n, t) < 0.2, torch.rand(n, t) < 0.2,
            torch.randn(n, t), torch.randn(n))

    def advantages(r, v, term, trunc, tv, lv):
        return gae_triton(rewards=r, values=v, terminated=term, truncated=trunc, truncated_values=tv,
                          last_values=lv, gamma=0.99, lam=0.95)

    explain(advantages, *args)
    compiled = torch.compile(advantages, fullgraph=True, backend="aot_eager")(*args)
    for got, want, name in zip(compiled, advantages(*args), ("advantages", "returns")):
        assert_close(got, want, name)


# --- the compiled code is what runs -------------------------------------------------------------------------

def test_callers_hold_compiled_callables_that_run_the_compiled_graph():
    """Compiled where the parts are put together: the policy's methods stay its own (nothing replaced on the
    instance), and the callables the collector, evaluator and updater hold run the compiled graph each call."""
    graph_runs = []

    def counting_backend(gm, example_inputs):
        def run(*args):
            graph_runs.append(1)
            return gm.forward(*args)
        return run

    policy, env, buffer = small_parts(num_envs=3)
    assert "get_action" not in vars(policy) and type(policy).compile is torch.nn.Module.compile
    collector = RolloutCollector(policy, env, buffer, EpisodeTracker(3, torch.device("cpu")), compile_mode="default",
                                 compile_backend=counting_backend)
    evaluator = Evaluator(policy, CartPole(3, stateless=True), compile_mode="default", compile_backend=counting_backend)
    with torch.inference_mode():
        for call in (lambda: collector.step(collector.obs, collector.hidden, collector.episode_starts),
                     lambda: collector.last_value(collector.obs, collector.hidden, collector.episode_starts),
                     lambda: evaluator.step(collector.obs, collector.hidden, collector.episode_starts)):
            buffer.reset()
            before = len(graph_runs)
            call()
            call()
            assert len(graph_runs) == before + 2, "each call must run the compiled graph"
    buffer.pos = buffer.num_steps
    buffer.compute_advantages(torch.zeros(3), 0.99, 0.95)
    updater = PPOUpdater(policy, torch.optim.Adam(policy.parameters()), compile_mode="default",
                         compile_backend=counting_backend)
    before = len(graph_runs)
    updater.step(next(buffer.get_batched_sequences(4, 1)))
    assert len(graph_runs) == before + 1


def test_compile_fn_refuses_unknown_modes():
    with pytest.raises(ValueError, match="'fast' is not one of"):
        compile_fn(lambda x: x, "fast")


# --- no recompiles after the first iteration (inductor on CPU) ---------------------------------------------

def tiny_config(tmp_path, **changes):
    cfg = TrainConfig(num_envs=8, num_steps=16, seq_len=8, num_minibatches=2, update_epochs=2, hidden_dim=16,
                      total_steps=8 * 16 * 3, eval_episodes=8, progress=False, device="cpu",
                      compile_mode="default", run_dir=str(tmp_path / "run"))
    return cfg.replace(**changes)


def no_recompiles_after_the_first_iteration(trainer: Trainer) -> None:
    trainer.train_iteration(0)
    trainer.evaluate(8)
    graphs = counters["stats"]["unique_graphs"]
    assert graphs >= 4, "rollout step, last value, loss and evaluation step should each be compiled"
    with torch._dynamo.config.patch(error_on_recompile=True):
        for iteration in (1, 2):  # each: rollout, GAE, all epochs and minibatches, lr annealing, evaluation
            trainer.train_iteration(iteration)
            trainer.evaluate(8)
        # The check can fail: a batch of another size would need a new graph, and raises here.
        collector = trainer.collector
        with torch.inference_mode(), pytest.raises(torch._dynamo.exc.RecompileError):
            collector.step(collector.obs[:4], tuple(part[:, :4] for part in collector.hidden),
                           collector.episode_starts[:4])
    assert float(trainer.lr) == pytest.approx(trainer.cfg.learning_rate / 3), "the lr annealed in place"
    assert counters["stats"]["unique_graphs"] == graphs
    assert not counters["recompiles"], dict(counters["recompiles"])


def test_no_recompiles_after_the_first_iteration(tmp_path):
    # The GRU under aot_eager (the same graphs as inductor's, traced faster), with the skip past the core, the
    # recall head and the value targets' own lambda; the LSTM under inductor below.
    trainer = Trainer(tiny_config(tmp_path, core="gru", compile_backend="aot_eager", skip_core=True, recall_coef=0.5,
                                  value_lambda=0.5))
    no_recompiles_after_the_first_iteration(trainer)
    assert trainer.buffer.value_advantages is not None, "the update read value targets at their own lambda"


@pytest.mark.slow(seconds=33, together="inductor")
def test_an_inductor_run_keeps_the_seed_contract_and_never_recompiles(tmp_path):
    """The LSTM under inductor (what CPU runs use), compiled once for both contracts: the seed ticket's claims on
    the trainer's compiled rollout and loss, then no recompiles over three iterations and evaluations."""
    trainer = Trainer(tiny_config(tmp_path))
    policy, buffer, cfg = trainer.policy, trainer.buffer, trainer.cfg
    eager_policy = copy.deepcopy(policy)  # the same weights, never compiled
    eager = PPOUpdater(eager_policy, torch.optim.Adam(eager_policy.parameters()), PPOSettings.of(cfg))

    # 1. initial_hidden() makes inference tensors.
    assert all(part.is_inference() for part in policy.initial_hidden(8))

    # 2. Copied into the buffer by the compiled rollout, they leave it made of normal tensors.
    buffer.compute_advantages(trainer.collector.collect(), cfg.gamma, cfg.gae_lambda)
    assert not any(part.is_inference() for part in buffer.hidden)

    # 6. Before any update, the rollout's log-probs are what evaluate_actions computes (ratio 1).
    batches = list(buffer.get_batched_sequences(cfg.seq_len, cfg.num_minibatches))  # the update's minibatches
    for batch in batches:
        out = eager_policy.evaluate_actions(batch.obs, batch.hidden, batch.episode_starts, batch.actions)
        ratio = (out.log_prob.detach() - batch.log_probs).exp()
        assert_close(ratio, torch.ones_like(ratio), "rollout/evaluate ratio", rtol=0, atol=1e-5)

    # 3. Buffer -> compiled loss (evaluate_actions, PPO loss) -> backward: finite, non-zero gradients everywhere.
    batch = batches[0]
    loss, terms = trainer.updater.loss(batch)
    loss.backward()
    for name, param in policy.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, f"zero gradient for {name}"

    # 4. Eager and compiled agree: the loss terms (approx KL and clip fraction 0 at ratio 1) and the gradients.
    eager_loss, eager_terms = eager.loss(batch)
    eager_loss.backward()
    assert_close(terms, eager_terms, "loss terms", rtol=1e-5, atol=1e-5)
    assert_close(terms[4:6], torch.zeros(2), "approx KL and clip fraction", rtol=0, atol=1e-5)
    eager_grads = dict(eager_policy.named_parameters())
    for name, param in policy.named_parameters():
        assert_close(param.grad, eager_grads[name].grad, f"grad of {name}", rtol=1e-4, atol=1e-5)

    # 5. initial_hidden() straight to training fails loudly, compiled and eager.
    for which, updater in ((policy, trainer.updater), (eager_policy, eager)):
        with pytest.raises(RuntimeError, match="Inference tensors cannot be saved for backward"):
            loss, _ = updater.loss(batch._replace(hidden=which.initial_hidden(batch.actions.shape[0])))
            loss.backward()
    policy.zero_grad(set_to_none=True)

    no_recompiles_after_the_first_iteration(trainer)


# --- the seed contract under compile -----------------------------------------------------------------------

def seed_contract(device, mode, core="lstm", backend="inductor"):
    """The six claims of the seed ticket, with every hot path compiled in `mode`."""
    torch.manual_seed(0)
    policy, env, buffer = small_parts(num_envs=8, num_steps=8, device=device, core=core)
    eager_policy = small_policy(core, device)
    eager_policy.load_state_dict(policy.state_dict())
    evaluate_actions = compile_fn(policy.evaluate_actions, mode, backend)

    # 1. initial_hidden() makes inference tensors.
    state = policy.initial_hidden(8)
    assert len(state) == len(buffer.hidden_names) and all(part.is_inference() for part in state)

    # 2. Copied into the buffer (by the compiled rollout) they leave it made of normal tensors.
    filled_buffer(policy, env, buffer, compile_mode=mode, compile_backend=backend)
    assert not any(part.is_inference() for part in buffer.hidden)

    # 6. Before any update, the rollout's log-probs are what evaluate_actions computes (ratio 1).
    for batch in buffer.get_batched_sequences(4, 2):
        out = evaluate_actions(batch.obs, batch.hidden, batch.episode_starts, batch.actions)
        ratio = (out.log_prob.detach() - batch.log_probs).exp()
        assert_close(ratio, torch.ones_like(ratio), "rollout/evaluate ratio", rtol=0, atol=1e-5)

    # 3. Buffer -> compiled evaluate_actions -> PPO loss -> backward: finite, non-zero gradients everywhere.
    batch = next(buffer.get_batched_sequences(4, 1))
    out = evaluate_actions(batch.obs, batch.hidden, batch.episode_starts, batch.actions)
    ppo_loss(out, batch, **LOSS).loss.backward()
    for name, param in policy.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, f"zero gradient for {name}"

    # 4. Eager and compiled evaluate_actions agree, outputs and gradients.
    eager_out = eager_policy.evaluate_actions(batch.obs, batch.hidden, batch.episode_starts, batch.actions)
    ppo_loss(eager_out, batch, **LOSS).loss.backward()
    for field in ("log_prob", "value", "entropy"):
        assert_close(getattr(out, field), getattr(eager_out, field), field, rtol=1e-5, atol=1e-5)
    eager_grads = dict(eager_policy.named_parameters())
    for name, param in policy.named_parameters():
        assert_close(param.grad, eager_grads[name].grad, f"grad of {name}", rtol=1e-4, atol=1e-5)

    # 5. initial_hidden() straight to training fails loudly, compiled and eager.
    for which, evaluate in ((policy, evaluate_actions), (eager_policy, eager_policy.evaluate_actions)):
        with pytest.raises(RuntimeError, match="Inference tensors cannot be saved for backward"):
            evaluate(batch.obs, which.initial_hidden(batch.obs.shape[0]), batch.episode_starts,
                     batch.actions).log_prob.sum().backward()


@pytest.mark.slow(seconds=8, together="inductor")
def test_compiled_rollout_fills_the_buffer_as_eager_does():
    """The compiled step writes the buffer and the carry inside its graph: two rollouts of it, with inductor's
    random numbers drawn as eager draws them, leave every field as the eager rollout does."""
    buffers = {}
    for mode in ("off", "default"):
        torch.manual_seed(0)
        policy = small_policy()
        env = CartPole(8, stateless=True, max_episode_steps=14)  # terminations and truncations in the rollouts
        buffer = RolloutBuffer.for_policy(policy, 8, 16, "cpu")
        collector = RolloutCollector(policy, env, buffer, EpisodeTracker(8, torch.device("cpu")),
                                     RolloutSettings(reward_scale=0.1), compile_mode=mode)
        with torch._inductor.config.patch(fallback_random=True):
            collector.collect()
            last_values = collector.collect()
        buffers[mode] = (buffer, last_values)
    (eager, eager_last), (compiled, compiled_last) = buffers["off"], buffers["default"]
    assert eager.truncated.any() and eager.terminated.any() and eager.episode_starts[:, 1:].any()
    for name in ("obs", "actions", "log_probs", "values", "rewards", "terminated", "truncated", "truncated_values",
                 "episode_starts", "hidden_h", "hidden_c"):
        assert_close(getattr(compiled, name), getattr(eager, name), name, rtol=1e-5, atol=1e-5)
    assert_close(compiled_last, eager_last, "last values", rtol=1e-5, atol=1e-5)
    assert compiled.pos == compiled.num_steps and int(compiled.step_index) == compiled.num_steps


@pytest.mark.slow(seconds=6)
def test_seed_contract_compiled_on_cpu():
    """The GRU under aot_eager, which traces the same graphs through AOTAutograd at a fraction of inductor's compile
    time (compile_fn refuses inference inputs for any backend); the LSTM under inductor is
    test_an_inductor_run_keeps_the_seed_contract_and_never_recompiles."""
    seed_contract("cpu", "default", "gru", "aot_eager")


@pytest.mark.gpu
@pytest.mark.parametrize("core", ["lstm", "gru"])
def test_seed_contract_under_reduce_overhead_on_gpu(core):
    seed_contract("cuda", "reduce-overhead", core)


@pytest.mark.gpu
def test_reduce_overhead_iteration_has_no_host_sync(tmp_path):
    trainer = Trainer(tiny_config(tmp_path, device="cuda", compile_mode="reduce-overhead", num_envs=256,
                                   total_steps=256 * 16 * 3))
    # Compile and capture outside the checked region. Cudagraph trees warm a function up on its first call and
    # record it on its second; last_value runs once per rollout, so it is recorded in the second iteration.
    trainer.train_iteration(0)
    trainer.train_iteration(1)
    trainer.evaluate(8)
    # Every compiled graph really replays as a CUDA graph (trees fall back to plain inductor silently).
    assert not counters["inductor"]["cudagraph_skips"], "a graph ran without CUDA graphs (see TORCH_LOGS=perf_hints)"
    cfg = trainer.cfg
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        last_values = trainer.collector.collect()
        trainer.buffer.compute_advantages(last_values, cfg.gamma, cfg.gae_lambda)
        for _ in range(cfg.update_epochs):
            for batch in trainer.buffer.get_batched_sequences(cfg.seq_len, cfg.num_minibatches):
                trainer.updater.step(batch)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
