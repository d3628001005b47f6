"""The fused recurrence wired into the cores, the update and the trainer (`--rnn-kernel`), the precision modes
(`--precision`) and the refresh of the stored states (`--refresh-hidden`). Without CUDA the fused kernels run
under TRITON_INTERPRET=1 (tests/conftest.py sets it), so every size here is small."""

from __future__ import annotations

import json

import pytest
import torch
from torch._dynamo.backends.common import aot_autograd
from torch._dynamo.utils import counters
from torch._functorch.aot_autograd import make_boxed_func

from recurrent_ppo.buffer import RolloutBuffer
from recurrent_ppo.checkpoint import load_policy
from recurrent_ppo.cli import help_text, main, parse
from recurrent_ppo.config import TrainConfig
from recurrent_ppo.envs import CartPole
from recurrent_ppo.episodes import EpisodeTracker
from recurrent_ppo.kernels import rnn_common
from recurrent_ppo.models import CategoricalHead, RecurrentPolicy, make_core, reset_state
from recurrent_ppo.models.policy import add_time
from recurrent_ppo.ppo import PPOSettings, PPOUpdater
from recurrent_ppo.rollout import RolloutCollector
from recurrent_ppo.spaces import Box, Discrete
from recurrent_ppo.trainer import Trainer
from tests.helpers import assert_close

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
CORES = ["lstm", "gru"]

needs_fused = pytest.mark.skipif(
    not (torch.cuda.is_available() or rnn_common.INTERPRETING),
    reason="the fused kernels need CUDA, or TRITON_INTERPRET=1 set before triton is imported (tests/conftest.py "
           "sets it when there is no CUDA)")


@pytest.fixture(autouse=True)
def _keep_matmul_precision():
    """A trainer sets the process's float32 matmul precision (tf32: 'high'); the next test gets it back."""
    before = torch.get_float32_matmul_precision()
    yield
    torch.set_float32_matmul_precision(before)


def assert_relative(got: torch.Tensor, want: torch.Tensor, name: str, tol: float = 1e-5) -> None:
    """Elementwise within `tol` relative; elements near zero within 0.1 tol of the tensor's largest magnitude."""
    scale = want.abs().max().item() or 1.0
    assert_close(got, want, name, rtol=tol, atol=0.1 * tol * scale)


def policy_of(core: str, *, layers: int = 1, kernel: str = "fused", hidden: int = 16) -> RecurrentPolicy:
    """A stateless-CartPole policy whose action head is scaled up: the initial head (gain 0.01) gives log-probs
    of about log(1/2) whatever the features, which would hide a wrong recurrence behind equal log-probs."""
    policy = RecurrentPolicy(Box((2,)), Discrete(2), hidden_dim=hidden, num_layers=layers, core=core).to(DEVICE)
    with torch.no_grad():
        policy.head.linear.weight.mul_(300.0)
    policy.core.use_kernel(kernel)
    return policy


def filled_buffer(policy: RecurrentPolicy, num_envs: int = 4, num_steps: int = 16, **collector_args):
    """One rollout of stateless CartPole, cut at 6 steps so that episodes start inside the sequences."""
    env = CartPole(num_envs, DEVICE, stateless=True, max_episode_steps=6)
    buffer = RolloutBuffer.for_policy(policy, num_envs, num_steps, DEVICE)
    collector = RolloutCollector(policy, env, buffer, EpisodeTracker(num_envs, torch.device(DEVICE)),
                                 **collector_args)
    collector.collect()  # the carry leaves the first rollout: the second starts from a non-zero state
    buffer.compute_advantages(collector.collect(), 0.99, 0.95)
    assert buffer.episode_starts[:, 1:].any() and buffer.hidden_h[:, 0].abs().sum() > 0
    return buffer


def recording_backend(graphs: dict[str, list[torch.fx.GraphModule]]):
    """aot_eager that keeps every forward and backward FX graph it compiles."""
    def keep(kind):
        def compiler(gm, example_inputs):
            graphs.setdefault(kind, []).append(gm)
            return make_boxed_func(gm.forward)
        return compiler
    return aot_autograd(fw_compiler=keep("forward"), bw_compiler=keep("backward"))


def scan_calls(gm: torch.fx.GraphModule) -> list[str]:
    return [str(node.target) for node in gm.graph.nodes if "recurrent_ppo" in str(node.target)]


# --- the core: fused equals unrolled ------------------------------------------------------------------------

def starts_of(pattern: str, batch: int, seq_len: int) -> torch.Tensor:
    starts = torch.zeros(batch, seq_len, dtype=torch.bool)
    if pattern == "step0":
        starts[:, 0] = True
    elif pattern == "mid":
        starts[::2, seq_len // 2] = True
        starts[1, 1] = True
    return starts.to(DEVICE)


@needs_fused
@pytest.mark.parametrize("resets", ["step0", "mid", "never"])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("kind", CORES)
def test_fused_core_equals_the_unrolled_core(kind, layers, resets):
    torch.manual_seed(0)
    core = make_core(kind, 6, 16, layers).to(DEVICE)
    batch, seq_len = 5, 7
    x = torch.randn(batch, seq_len, 6, device=DEVICE, requires_grad=True)
    state = tuple(torch.randn(layers, batch, 16, device=DEVICE, requires_grad=True) for _ in core.state_names)
    starts = starts_of(resets, batch, seq_len)
    weights = torch.randn(batch, seq_len, 16, device=DEVICE)  # a loss that weighs every output differently
    inputs = {"x": x, **{f"initial {name}": part for name, part in zip(core.state_names, state)},
              **dict(core.named_parameters())}
    results = {}
    for kernel in ("unrolled", "fused"):
        out, final = core.use_kernel(kernel)(x, starts, state)
        loss = (out * weights).sum() + sum((i + 2) * part.square().sum() for i, part in enumerate(final))
        results[kernel] = (out, final, torch.autograd.grad(loss, list(inputs.values())))
    (out, final, grads), (want_out, want_final, want_grads) = results["fused"], results["unrolled"]
    assert out.dtype == want_out.dtype == torch.float32
    assert_relative(out, want_out, "outputs")
    for name, got, want in zip(core.state_names, final, want_final, strict=True):
        assert got.shape == want.shape == (layers, batch, 16)
        assert_relative(got, want, f"final {name}")
    for name, got, want in zip(inputs, grads, want_grads, strict=True):
        if resets == "step0" and name.startswith("initial"):  # reset before the first step: nothing reaches it
            assert not got.any() and not want.any(), f"gradient of {name}"
            continue
        assert want.abs().sum() > 0, f"the unrolled gradient of {name} is zero: the check would be empty"
        assert_relative(got, want, f"gradient of {name}")


@pytest.mark.parametrize("kind", CORES)
def test_one_step_runs_the_cell_with_either_kernel(kind, monkeypatch):
    # The rollout's step is one cell; a scan called for L = 1 fails this test.
    policy = policy_of(kind)
    monkeypatch.setattr(type(policy.core), "scan", lambda *args: pytest.fail("the scan ran for one step"))
    with torch.inference_mode():
        act = policy.get_action(torch.randn(3, 2, device=DEVICE), policy.initial_hidden(3),
                                torch.tensor([True, False, True], device=DEVICE))
    assert act.log_prob.shape == (3,)


def test_the_kernel_is_a_runtime_choice_outside_the_checkpoint():
    fused, unrolled = policy_of("lstm", kernel="fused"), policy_of("lstm", kernel="unrolled")
    assert fused.spec() == unrolled.spec() and "kernel" not in json.dumps(fused.spec())
    assert fused.state_dict().keys() == unrolled.state_dict().keys()
    with pytest.raises(ValueError, match="kernel='cudnn' is not one of"):
        fused.core.use_kernel("cudnn")


# --- the update with the fused op ---------------------------------------------------------------------------

@needs_fused
@pytest.mark.parametrize("kind", CORES)
def test_rollout_log_probs_equal_fused_evaluate_actions(kind):
    torch.manual_seed(0)
    policy = policy_of(kind, layers=2)
    buffer = filled_buffer(policy)
    for batch in buffer.get_batched_sequences(8, 2):
        out = policy.evaluate_actions(batch.obs, batch.hidden, batch.episode_starts, batch.actions)
        ratio = (out.log_prob.detach() - batch.log_probs).exp()
        assert_close(ratio, torch.ones_like(ratio), "rollout/evaluate ratio", rtol=0, atol=1e-5)
        # The check sees the recurrence: the same sequences from a zero state give other log-probs.
        zero = tuple(torch.zeros_like(part) for part in batch.hidden)
        other = policy.evaluate_actions(batch.obs, zero, batch.episode_starts, batch.actions).log_prob.detach()
        assert (other - batch.log_probs).abs().max() > 1e-3


def fresh_counters():
    torch._dynamo.reset()
    counters.clear()


@needs_fused
@pytest.mark.parametrize("kind,layers", [pytest.param("lstm", 2, marks=pytest.mark.slow(seconds=6)), ("gru", 1)])
def test_compiled_update_holds_the_op_without_breaks_or_recompiles(kind, layers):
    fresh_counters()
    torch.manual_seed(0)
    policy = policy_of(kind, layers=layers)
    buffer = filled_buffer(policy)
    graphs: dict[str, list] = {}
    updater = PPOUpdater(policy, torch.optim.Adam(policy.parameters(), lr=1e-3), compile_mode="default",
                         compile_backend=recording_backend(graphs))  # fullgraph=True: a break raises
    updater.update(buffer, seq_len=8, num_minibatches=2, epochs=1)
    with torch._dynamo.config.patch(error_on_recompile=True):
        metrics = updater.update(buffer, seq_len=8, num_minibatches=2, epochs=1)
    assert all(torch.isfinite(torch.tensor(value)) for value in metrics.values()), metrics
    assert counters["stats"]["unique_graphs"] == 1 and not counters["recompiles"]
    (forward,), (backward,) = graphs["forward"], graphs["backward"]
    assert scan_calls(forward) == [f"recurrent_ppo.{kind}_scan_forward.default"] * layers, "one launch per layer"
    assert scan_calls(backward) == [f"recurrent_ppo.{kind}_scan_backward.default"] * layers
    torch._dynamo.reset()


@pytest.mark.gpu
def test_compiled_update_under_inductor():
    """Inductor's code around the fused op, where the op runs in training: CUDA. On the CPU the op runs under the
    Triton interpreter alone, for tests; there the graph holding it is checked by the test above (AOTAutograd's
    forward and backward graphs, no break, no recompile) and the op's values by tests/test_rnn_kernels.py."""
    fresh_counters()
    torch.manual_seed(0)
    policy = policy_of("lstm", hidden=8)
    buffer = filled_buffer(policy)
    updater = PPOUpdater(policy, torch.optim.Adam(policy.parameters(), lr=1e-3), compile_mode="default")
    eager = policy_of("lstm", hidden=8)
    eager.load_state_dict(policy.state_dict())
    batch = next(buffer.get_batched_sequences(8, 2))  # the update's minibatch shape
    loss, _ = updater.loss(batch)
    loss.backward()
    eager_updater = PPOUpdater(eager, torch.optim.Adam(eager.parameters()))
    eager_loss, _ = eager_updater.loss(batch)
    eager_loss.backward()
    assert_close(loss, eager_loss, "inductor loss", rtol=1e-5, atol=1e-6)
    eager_grads = dict(eager.named_parameters())
    for name, param in policy.named_parameters():
        assert_close(param.grad, eager_grads[name].grad, f"inductor gradient of {name}", rtol=1e-4, atol=1e-6)
    with torch._dynamo.config.patch(error_on_recompile=True):
        updater.update(buffer, seq_len=8, num_minibatches=2, epochs=1)
    assert not counters["recompiles"]
    torch._dynamo.reset()


# --- the inference-mode contract, precision modes ---------------------------------------------------------------

def set_precision(policy: RecurrentPolicy, precision: str) -> None:
    """What the trainer does for `precision` beside the updater's own argument."""
    policy.core.use_kernel("fused", tf32=precision == "tf32")
    if precision == "tf32":
        torch.set_float32_matmul_precision("high")


@needs_fused
@pytest.mark.parametrize("kind,precision", [("lstm", "fp32"), ("gru", "fp32"), ("lstm", "bf16"),
                                            ("gru", "tf32")])
def test_the_inference_mode_contract_holds_with_the_fused_kernel(kind, precision):
    fresh_counters()
    torch.manual_seed(0)
    policy = policy_of(kind)
    set_precision(policy, precision)
    # 1. initial_hidden() gives inference tensors.
    assert all(part.is_inference() for part in policy.initial_hidden(4))
    # 2. The rollout copies them into the buffer, which stays made of normal tensors.
    buffer = filled_buffer(policy)
    assert not any(part.is_inference() for part in buffer.hidden)
    # 3. Buffer -> compiled loss (the fused op inside) -> backward: finite gradients for every parameter.
    compiled = PPOUpdater(policy, torch.optim.Adam(policy.parameters()), PPOSettings(bf16=precision == "bf16"),
                          compile_mode="default", compile_backend="aot_eager")
    batch = next(buffer.get_batched_sequences(8, 1))
    policy.zero_grad()
    loss, _ = compiled.loss(batch)
    loss.backward()
    assert loss.dtype == torch.float32
    for name, param in policy.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, f"zero gradient for {name}"
    # 4. initial_hidden() straight to training fails loudly, compiled and eager.
    eager = PPOUpdater(policy, torch.optim.Adam(policy.parameters()), PPOSettings(bf16=precision == "bf16"))
    for updater in (compiled, eager):
        with pytest.raises(RuntimeError, match="Inference tensors cannot be saved for backward"):
            loss, _ = updater.loss(batch._replace(hidden=policy.initial_hidden(batch.actions.shape[0])))
            loss.backward()
    torch._dynamo.reset()


# The rollout (fp32) against bf16 evaluate_actions, before any update: bf16 keeps 8 significant bits, and the
# rounding of the features passes through the head, whose weights are scaled up here. Largest |difference| seen
# (2 layers, hidden 16, 4 envs x 16 steps, seed 0, CPU): lstm 1.2e-3 fused, 1.8e-3 unrolled; gru 2.8e-3 fused,
# 4.9e-3 unrolled. The bound is 2.5x the worst.
BF16_LOG_PROB_TOL = 1.25e-2


@needs_fused
@pytest.mark.parametrize("kernel", ["fused", "unrolled"])
@pytest.mark.parametrize("kind", CORES)
def test_bf16_log_probs_track_the_rollout(kind, kernel, capsys):
    torch.manual_seed(0)
    policy = policy_of(kind, layers=2, kernel=kernel)
    buffer = filled_buffer(policy)
    worst = 0.0
    for batch in buffer.get_batched_sequences(8, 2):
        with torch.autocast(DEVICE, dtype=torch.bfloat16):
            out = policy.evaluate_actions(batch.obs, batch.hidden, batch.episode_starts, batch.actions)
        worst = max(worst, (out.log_prob.detach().float() - batch.log_probs).abs().max().item())
    with capsys.disabled():
        print(f"\n{kind} {kernel}: bf16 evaluate vs fp32 rollout, largest |log-prob difference| {worst:.2e}", end="")
    assert worst <= BF16_LOG_PROB_TOL
    assert worst > 1e-5, "bf16 should round somewhere: autocast did not apply"


@needs_fused
def test_bf16_update_compiles_with_an_fp32_loss():
    # The GRU here, the LSTM in the inference-mode contract under bf16: both cores compiled with an fp32 loss.
    fresh_counters()
    torch.manual_seed(0)
    policy = policy_of("gru")
    buffer = filled_buffer(policy)
    updater = PPOUpdater(policy, torch.optim.Adam(policy.parameters(), lr=1e-3), PPOSettings(bf16=True),
                         compile_mode="default", compile_backend="aot_eager")  # fullgraph=True: a break raises
    loss, terms = updater.loss(next(buffer.get_batched_sequences(8, 2)))
    assert loss.dtype == terms.dtype == torch.float32 and torch.isfinite(terms).all()
    with torch._dynamo.config.patch(error_on_recompile=True):
        metrics = updater.update(buffer, seq_len=8, num_minibatches=2, epochs=2)
    assert all(torch.isfinite(torch.tensor(value)) for value in metrics.values()), metrics
    assert counters["stats"]["unique_graphs"] == 1 and not counters["recompiles"]
    torch._dynamo.reset()


def test_masked_logits_stay_finite_under_bf16_autocast():
    # In bf16 the masked logit (float32's lowest) rounds to -inf, and the entropy's 0 * -inf is NaN.
    head = CategoricalHead(8, Discrete(4)).to(DEVICE)
    mask = torch.tensor([[True, False, True, False]] * 3, device=DEVICE)
    with torch.autocast(DEVICE, dtype=torch.bfloat16):
        log_prob, entropy = head.evaluate(torch.randn(3, 8, device=DEVICE), torch.zeros(3, device=DEVICE), mask)
    assert torch.isfinite(log_prob).all() and torch.isfinite(entropy).all()


# --- refresh_hidden -------------------------------------------------------------------------------------------

def straight_run_states(policy: RecurrentPolicy, buffer: RolloutBuffer) -> tuple[torch.Tensor, ...]:
    """The state fed into every step (after its reset) of one unrolled run over the whole rollout from the state
    stored at step 0, as `[num_envs, num_steps, layers, H]` tensors like the buffer's."""
    kernel = policy.core.kernel
    policy.core.use_kernel("unrolled")
    states, state = [], tuple(part[:, 0].transpose(0, 1) for part in buffer.hidden)
    with torch.no_grad():
        for t in range(buffer.num_steps):
            starts = buffer.episode_starts[:, t]
            states.append(reset_state(state, starts))
            _, state = policy.features(add_time(buffer.obs[:, t]), state, starts[:, None])
    policy.core.use_kernel(kernel)
    # each step's [layers, N, H] -> [N, T, layers, H]
    return tuple(torch.stack([step[i] for step in states], dim=2).permute(1, 2, 0, 3) for i in range(len(state)))


@needs_fused
@pytest.mark.parametrize("kernel", ["fused", "unrolled"])
@pytest.mark.parametrize("kind", CORES)
def test_refresh_stores_the_states_of_the_current_weights(kind, kernel):
    fresh_counters()
    torch.manual_seed(0)
    policy = policy_of(kind, layers=2, kernel=kernel)
    buffer = filled_buffer(policy)
    stale = tuple(part.clone() for part in buffer.hidden)
    with torch.no_grad():  # the weights an epoch of updates left
        for param in policy.core.parameters():
            param.add_(0.2 * torch.randn_like(param))
    updater = PPOUpdater(policy, torch.optim.Adam(policy.parameters()), compile_mode="default",
                         compile_backend="aot_eager")
    updater.refresh(buffer, seq_len=4)
    starts = list(range(4, 16, 4))
    others = [t for t in range(16) if t not in starts]
    for name, got, want, old in zip(buffer.hidden_names, buffer.hidden, straight_run_states(policy, buffer), stale):
        assert_relative(got[:, starts], want[:, starts], f"refreshed {name}")
        assert torch.equal(got[:, others], old[:, others]), f"{name}: only the sequence starts may change"
        changed = (got[:, starts] - old[:, starts]).abs().amax(dim=(2, 3))  # [num_envs, chunks]
        kept = buffer.episode_starts[:, starts]
        assert (changed[~kept] > 1e-3).all(), f"{name}: the new weights should change the carried states"
        assert (got[:, starts][kept] == 0).all(), f"{name}: a sequence that starts an episode starts at zero"
    assert counters["stats"]["unique_graphs"] == 1, "every chunk of the rollout replays one compiled graph"
    torch._dynamo.reset()


@needs_fused
@pytest.mark.parametrize("kind", CORES)
def test_refresh_right_after_the_rollout_keeps_the_stored_states(kind):
    torch.manual_seed(0)
    policy = policy_of(kind, layers=2)
    buffer = filled_buffer(policy)
    stored = tuple(part.clone() for part in buffer.hidden)
    PPOUpdater(policy, torch.optim.Adam(policy.parameters())).refresh(buffer, seq_len=8)
    for name, got, want in zip(buffer.hidden_names, buffer.hidden, stored):
        assert_relative(got, want, f"{name} refreshed with the rollout's weights")


def tiny_config(tmp_path, **changes) -> TrainConfig:
    cfg = TrainConfig(env="cartpole", num_envs=4, num_steps=16, seq_len=4, num_minibatches=2, update_epochs=3,
                      hidden_dim=8, total_steps=4 * 16 * 2, eval_episodes=0, progress=False, device=DEVICE,
                      compile_mode="off", run_dir=str(tmp_path / "run"))
    return cfg.replace(**changes)


@needs_fused
def test_trainer_iterations_refresh_with_the_fused_kernel(tmp_path):
    # Eager: the compiled refresh is the test above's.
    trainer = Trainer(tiny_config(tmp_path, rnn_kernel="fused", refresh_hidden=True))
    assert trainer.policy.core.kernel == "fused"
    refreshes = []
    refresh = trainer.updater.refresh
    trainer.updater.refresh = lambda buffer, seq_len: (refreshes.append(seq_len), refresh(buffer, seq_len))
    for iteration in range(2):
        metrics = trainer.train_iteration(iteration)
    assert refreshes == [4] * 4, "before each epoch but the first, every iteration"
    assert all(torch.isfinite(torch.tensor(value)) for value in metrics.values()), metrics


# --- configuration, command line, checkpoints ---------------------------------------------------------------

def test_fused_is_refused_where_its_kernels_cannot_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(rnn_common, "INTERPRETING", False)
    cfg = TrainConfig(device="cpu", rnn_kernel="fused")
    with pytest.raises(ValueError, match="rnn_kernel='fused' cannot run: .* need a CUDA device .* the device is "
                                         "cpu; use --rnn-kernel unrolled \\(or auto\\), or run on CUDA"):
        cfg.validate()
    assert cfg.replace(rnn_kernel="auto").resolved_rnn_kernel(torch.device("cpu")) == "unrolled"
    assert cfg.replace(rnn_kernel="auto").resolved_rnn_kernel(torch.device("cuda")) == "unrolled", \
        "auto stays on the measured path until the fused kernels are measured on a GPU"
    assert main(["train", "--rnn-kernel", "fused", "--device", "cpu", "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "use --rnn-kernel unrolled" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


@needs_fused
def test_fused_is_accepted_where_its_kernels_run():
    assert TrainConfig(device=DEVICE, rnn_kernel="fused").validate().resolved_rnn_kernel(torch.device(DEVICE)) == \
        "fused"


def test_tf32_asks_for_tf32_matmuls():
    assert TrainConfig(precision="tf32").matmul_precision == "high"
    assert TrainConfig(precision="fp32").matmul_precision == TrainConfig(precision="bf16").matmul_precision == "highest"


def test_the_options_parse_and_show_in_the_help():
    args, _ = parse(["train", "--rnn-kernel", "unrolled", "--precision", "bf16", "--refresh-hidden"])
    assert (args.config.rnn_kernel, args.config.precision, args.config.refresh_hidden) == ("unrolled", "bf16", True)
    args, _ = parse(["train", "--no-refresh-hidden"])
    assert (args.config.rnn_kernel, args.config.precision, args.config.refresh_hidden) == ("auto", "fp32", False)
    text = help_text("train")
    for flag in ("--rnn-kernel {auto,unrolled,fused}", "--precision {fp32,tf32,bf16}", "--refresh-hidden"):
        assert flag in text, flag
    assert main(["train", "--precision", "fp16"]) == 2


@needs_fused
def test_the_options_survive_a_checkpoint_and_resume(tmp_path, capsys):
    run = tmp_path / "run"
    flags = ["--env", "cartpole", "--num-envs", "4", "--num-steps", "16", "--seq-len", "4", "--num-minibatches", "2",
             "--update-epochs", "2", "--hidden-dim", "8", "--eval-episodes", "0", "--device", DEVICE,
             "--compile-mode", "off", "--no-progress", "--run-dir", str(run)]
    assert main(["train", *flags, "--total-steps", "64", "--rnn-kernel", "unrolled", "--precision", "bf16",
                 "--refresh-hidden"]) == 0
    saved = torch.load(run / "checkpoint.pt", weights_only=True)["config"]
    assert (saved["rnn_kernel"], saved["precision"], saved["refresh_hidden"]) == ("unrolled", "bf16", True)
    assert json.loads((run / "config.json").read_text())["resolved_rnn_kernel"] == "unrolled"
    # Trained unrolled, it resumes fused (and the other way round): the kernel is how it runs, not what it is.
    assert main(["train", "--resume", str(run), "--total-steps", "128", "--rnn-kernel", "fused", "--precision",
                 "tf32", "--no-progress"]) == 0
    saved = torch.load(run / "checkpoint.pt", weights_only=True)
    assert (saved["config"]["rnn_kernel"], saved["config"]["precision"], saved["config"]["refresh_hidden"]) == (
        "fused", "tf32", True)
    assert saved["global_step"] == 128
    assert load_policy(run).core.kernel == "unrolled", "a loaded policy runs the reference until told otherwise"
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--total-steps", "192", "--no-refresh-hidden"]) == 2
    assert "--refresh-hidden cannot change when resuming (the run has refresh_hidden=True)" in capsys.readouterr().err
