"""GAE: the pure-torch reference, the Triton scan kernel and the lab's loop kernel (bench/gae_lab; the
interpreter on CPU) against a float64 scalar loop."""

import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx

from bench.gae_lab.loop_kernel import gae_triton_loop
from recurrent_ppo.kernels.gae import gae, gae_reference, gae_triton, nearest_tile
from recurrent_ppo.kernels.gae_tiles import TILES
from tests.helpers import assert_close

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def gae_loop_float64(rewards, values, terminated, truncated, truncated_values, last_values, gamma, lam):
    """The semantics of docs/design.md ("Semantics") written as plainly as possible: python scalars, float64."""
    n, t_max = rewards.shape
    r, v, tv, lv = (x.double().cpu().tolist() for x in (rewards, values, truncated_values, last_values))
    term, trunc = terminated.bool().cpu().tolist(), truncated.bool().cpu().tolist()
    adv = [[0.0] * t_max for _ in range(n)]
    for i in range(n):
        next_adv = 0.0
        for t in reversed(range(t_max)):
            if trunc[i][t]:
                next_value = tv[i][t]
            elif t < t_max - 1:
                next_value = v[i][t + 1]
            else:
                next_value = lv[i]
            delta = r[i][t] + gamma * next_value * (1.0 - term[i][t]) - v[i][t]
            next_adv = delta + gamma * lam * (1.0 - (term[i][t] or trunc[i][t])) * next_adv
            adv[i][t] = next_adv
    adv = torch.tensor(adv, dtype=torch.float64)
    return adv, adv + values.double().cpu()


def make_inputs(n, t, *, done_prob=0.1, dtype=torch.float32, mask_dtype=torch.bool, seed=0):
    g = torch.Generator().manual_seed(seed)
    terminated = torch.rand(n, t, generator=g) < done_prob
    truncated = (torch.rand(n, t, generator=g) < done_prob) & ~terminated
    inputs = dict(
        rewards=torch.randn(n, t, generator=g),
        values=torch.randn(n, t, generator=g),
        terminated=terminated,
        truncated=truncated,
        truncated_values=torch.randn(n, t, generator=g),
        last_values=torch.randn(n, generator=g),
    )
    inputs = {k: v.to(DEVICE) for k, v in inputs.items()}
    for k in ("rewards", "values", "truncated_values", "last_values"):
        inputs[k] = inputs[k].to(dtype)
    for k in ("terminated", "truncated"):
        inputs[k] = inputs[k].to(mask_dtype)
    return inputs


def poisoned_out(n, t):
    return (torch.full((n, t), float("nan"), device=DEVICE), torch.full((n, t), float("nan"), device=DEVICE))


IMPLS = {"reference": gae_reference, "triton_scan": gae_triton, "triton_loop": gae_triton_loop}
# The most envs: several env blocks with a ragged last one. Under the interpreter (CPU) 129 envs are 5 blocks of
# the op's interpreter tile (32) and 2 of the loop kernel's (128), as 1023 are on the GPU at ~1/8 of the time.
MANY_ENVS = 1023 if DEVICE == "cuda" else 129
SIZES = [(n, t) for n in (1, 7, MANY_ENVS) for t in (1, 5, 63, 128)]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("n,t", SIZES, ids=[f"N{n}-T{t}" for n, t in SIZES])
def test_gae_matches_float64_loop(impl, n, t):
    inputs = make_inputs(n, t, seed=n * 1000 + t)
    expected_adv, expected_ret = gae_loop_float64(**inputs, gamma=0.99, lam=0.95)
    adv, ret = IMPLS[impl](**inputs, gamma=0.99, lam=0.95, out=poisoned_out(n, t))
    assert adv.dtype == torch.float32 and ret.dtype == torch.float32
    assert_close(adv.double().cpu(), expected_adv, "advantages", rtol=1e-5, atol=1e-5)
    assert_close(ret.double().cpu(), expected_ret, "returns", rtol=1e-5, atol=1e-5)


ADVANTAGES_ONLY_SIZES = [(1, 1), (7, 63), (33, 37)]  # 33 x 37: two env blocks, ragged time chunks


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("n,t", ADVANTAGES_ONLY_SIZES, ids=[f"N{n}-T{t}" for n, t in ADVANTAGES_ONLY_SIZES])
def test_advantages_only_match_and_leave_returns_unwritten(impl, n, t):
    """returns=False: the same advantages bit for bit (same tile, same scan), and no returns at all."""
    inputs = make_inputs(n, t, seed=n * 1000 + t)
    expected_adv, _ = gae_loop_float64(**inputs, gamma=0.99, lam=0.95)
    both, _ = IMPLS[impl](**inputs, gamma=0.99, lam=0.95)
    poisoned = poisoned_out(n, t)
    adv, ret = IMPLS[impl](**inputs, gamma=0.99, lam=0.95, out=(poisoned[0], None), returns=False)
    assert ret is None and adv is poisoned[0]
    assert_close(adv.double().cpu(), expected_adv, "advantages", rtol=1e-5, atol=1e-5)
    assert_close(adv, both, "advantages with and without returns", rtol=0, atol=0)
    allocated, ret = IMPLS[impl](**inputs, gamma=0.99, lam=0.95, returns=False)
    assert ret is None
    assert_close(allocated, both, "advantages into a tensor of the op's own", rtol=0, atol=0)


@pytest.mark.parametrize("impl", IMPLS)
def test_out_must_match_the_returns_flag(impl):
    inputs = make_inputs(4, 6)
    adv, ret = poisoned_out(4, 6)
    with pytest.raises(ValueError, match=r"out must be \(advantages, None\) with returns=False"):
        IMPLS[impl](**inputs, gamma=0.99, lam=0.95, out=(adv, ret), returns=False)
    with pytest.raises(ValueError, match=r"out must be \(advantages, returns\) with returns=True"):
        IMPLS[impl](**inputs, gamma=0.99, lam=0.95, out=(adv, None))
    assert adv.isnan().all() and ret.isnan().all(), "a rejected call must not write"


EDGES = [(0.99, 0.0), (0.99, 1.0), (1.0, 0.95), (1.0, 1.0), (0.0, 0.95)]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("gamma,lam", EDGES, ids=[f"g{g}-l{lam}" for g, lam in EDGES])
@pytest.mark.parametrize("done_prob", [0.0, 0.3, 1.0], ids=["no-done", "some-done", "all-done"])
def test_gae_edges(impl, gamma, lam, done_prob):
    inputs = make_inputs(7, 33, done_prob=done_prob)
    expected_adv, expected_ret = gae_loop_float64(**inputs, gamma=gamma, lam=lam)
    adv, ret = IMPLS[impl](**inputs, gamma=gamma, lam=lam, out=poisoned_out(7, 33))
    assert_close(adv.double().cpu(), expected_adv, "advantages", rtol=1e-5, atol=1e-4)
    assert_close(ret.double().cpu(), expected_ret, "returns", rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("impl", IMPLS)
def test_truncation_bootstraps_from_truncated_values(impl):
    # One env, 3 steps, cut by the time limit at step 1: step 1 bootstraps from truncated_values[1], not
    # values[2], and step 0's advantage does not flow back across the cut.
    inputs = dict(
        rewards=torch.tensor([[1.0, 1.0, 1.0]]), values=torch.tensor([[0.5, 0.25, 2.0]]),
        terminated=torch.tensor([[False, False, False]]), truncated=torch.tensor([[False, True, False]]),
        truncated_values=torch.tensor([[0.0, 10.0, 0.0]]), last_values=torch.tensor([3.0]),
    )
    inputs = {k: v.to(DEVICE) for k, v in inputs.items()}
    gamma, lam = 0.9, 0.8
    adv, _ = IMPLS[impl](**inputs, gamma=gamma, lam=lam)
    a2 = 1.0 + gamma * 3.0 - 2.0
    a1 = 1.0 + gamma * 10.0 - 0.25  # no decay term: the episode ended here
    a0 = (1.0 + gamma * 0.25 - 0.5) + gamma * lam * a1
    assert_close(adv.cpu(), torch.tensor([[a0, a1, a2]]), "advantages")


@pytest.mark.parametrize("impl", IMPLS)
def test_terminal_step_ignores_next_value(impl):
    inputs = dict(
        rewards=torch.tensor([[1.0, 1.0]]), values=torch.tensor([[0.5, 7.0]]),
        terminated=torch.tensor([[True, False]]), truncated=torch.tensor([[False, False]]),
        truncated_values=torch.tensor([[100.0, 100.0]]), last_values=torch.tensor([0.0]),
    )
    inputs = {k: v.to(DEVICE) for k, v in inputs.items()}
    adv, _ = IMPLS[impl](**inputs, gamma=0.99, lam=0.95)
    assert_close(adv.cpu(), torch.tensor([[0.5, -6.0]]), "advantages")


@pytest.mark.parametrize("impl", IMPLS)
def test_float_masks_equal_bool_masks(impl):
    as_bool = make_inputs(9, 17)
    as_float = make_inputs(9, 17, mask_dtype=torch.float32)
    a_bool, _ = IMPLS[impl](**as_bool, gamma=0.99, lam=0.95)
    a_float, _ = IMPLS[impl](**as_float, gamma=0.99, lam=0.95)
    # Exact: the tile depends on the size alone, so both calls associate the scan the same way. (When tiles were
    # autotuned per input dtypes, an H100 put 28 of 153 elements apart by up to 4.8e-7.)
    assert_close(a_float, a_bool, "advantages", rtol=0, atol=0)


@pytest.mark.parametrize("impl", IMPLS)
def test_truncated_values_are_used_only_where_truncated(impl):
    inputs = make_inputs(9, 21)
    clean, _ = IMPLS[impl](**inputs, gamma=0.99, lam=0.95)
    inputs["truncated_values"] = torch.where(inputs["truncated"], inputs["truncated_values"], float("nan"))
    poisoned, _ = IMPLS[impl](**inputs, gamma=0.99, lam=0.95)
    assert_close(poisoned, clean, "advantages", rtol=0, atol=0)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs_within_tolerance(impl, dtype):
    inputs = make_inputs(33, 63, dtype=dtype)
    expected_adv, _ = gae_loop_float64(**inputs, gamma=0.99, lam=0.95)  # oracle on the same rounded inputs
    adv, _ = IMPLS[impl](**inputs, gamma=0.99, lam=0.95)
    assert adv.dtype == torch.float32
    # The oracle sees the same rounded inputs, so only fp32 accumulation error remains: stated tolerance 1e-4.
    assert_close(adv.double().cpu(), expected_adv, "advantages", rtol=1e-4, atol=1e-4)


def test_triton_rejects_non_contiguous_inputs():
    inputs = make_inputs(6, 4)
    inputs["rewards"] = make_inputs(4, 6)["rewards"].t()
    for triton_gae in (gae_triton, gae_triton_loop):
        with pytest.raises(ValueError, match="rewards must be contiguous"):
            triton_gae(**inputs, gamma=0.99, lam=0.95)


def test_gae_dispatches_by_device():
    inputs = make_inputs(5, 9)
    adv, ret = gae(**inputs, gamma=0.99, lam=0.95)
    ref_adv, ref_ret = gae_reference(**inputs, gamma=0.99, lam=0.95)
    assert_close(adv, ref_adv, "advantages", rtol=1e-6, atol=1e-6)
    assert_close(ret, ref_ret, "returns", rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("returns", [True, False], ids=["with-returns", "advantages-only"])
def test_eager_triton_skips_op_dispatch_and_tracers_still_see_the_kernel(returns):
    inputs = make_inputs(5, 7)
    expected = gae_reference(**inputs, gamma=0.99, lam=0.95, returns=returns)
    with torch.profiler.profile() as prof:
        eager = gae_triton(**inputs, gamma=0.99, lam=0.95, returns=returns)
    assert "recurrent_ppo::gae_triton" not in {event.name for event in prof.events()}
    assert_close(eager[0], expected[0], "eager advantages")

    def advantages(*tensors):
        adv, ret = gae_triton(**dict(zip(inputs, tensors)), gamma=0.99, lam=0.95, returns=returns)
        return (adv, ret) if returns else (adv,)

    # make_fx traces through a dispatch mode, as AOTAutograd does: the launch must appear in its graph.
    graph = make_fx(advantages)(*inputs.values())
    targets = [str(node.target) for node in graph.graph.nodes if node.op == "call_function"]
    assert any("gae_triton" in target or "triton_kernel_wrapper" in target for target in targets), targets
    traced = graph(*inputs.values())
    assert_close(traced[0], expected[0], "traced advantages")
    if returns:
        assert_close(traced[1], expected[1], "traced returns")


def test_tile_lookup_takes_the_nearest_measured_size_and_fits_short_rollouts():
    tiles = {(1024, 32): (16, 32, 2, None, True), (4096, 128): (8, 128, 4, None, False),
             (131072, 512): (4, 512, 8, 1, False)}
    for (n, t), tile in tiles.items():
        assert nearest_tile(tiles, n, t) == tile
    assert nearest_tile(tiles, 3000, 100) == (8, 128, 4, None, False)  # nearest in log2 of both
    assert nearest_tile(tiles, 10**6, 2048) == (4, 512, 8, 1, False)  # beyond the table: its corner
    assert nearest_tile(tiles, 4096, 63) == (8, 64, 4, None, False)  # 128-step tile cut to 64
    assert nearest_tile(tiles, 1, 1) == (16, 16, 2, None, True)  # never below 16 steps
    assert nearest_tile(TILES, 4096, 128) == TILES[(4096, 128)]


@pytest.mark.parametrize("impl", IMPLS)
def test_rejects_mismatched_shapes(impl):
    inputs = make_inputs(4, 6)
    inputs["values"] = inputs["values"][:, :5]
    with pytest.raises(ValueError, match="values has shape"):
        IMPLS[impl](**inputs, gamma=0.99, lam=0.95)
    inputs = make_inputs(4, 6)
    with pytest.raises(ValueError, match="out advantages"):
        IMPLS[impl](**inputs, gamma=0.99, lam=0.95, out=poisoned_out(4, 5))


@pytest.mark.gpu
@pytest.mark.parametrize("returns", [True, False], ids=["with-returns", "advantages-only"])
@pytest.mark.parametrize("kernel", ["scan", "loop"])
def test_triton_op_compiles_fullgraph_and_replays_in_cuda_graphs(kernel, returns):
    inputs = make_inputs(4096, 128)
    triton_gae = {"scan": gae_triton, "loop": gae_triton_loop}[kernel]

    def advantages(inputs):
        adv, ret = triton_gae(**inputs, gamma=0.99, lam=0.95, returns=returns)
        return adv, (ret if returns else adv + inputs["values"])  # returns formed after the op, as the loss does

    compiled = torch.compile(advantages, fullgraph=True, mode="reduce-overhead")
    expected = gae_reference(**inputs, gamma=0.99, lam=0.95)
    for call in range(3):  # warm-up, capture, replay
        adv, ret = compiled(inputs)
        assert_close(adv, expected[0], f"advantages, call {call}", rtol=1e-5, atol=1e-5)
        assert_close(ret, expected[1], f"returns, call {call}", rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("n,t", [(131072, 128), (1024, 512)])
def test_triton_at_benchmark_sizes(n, t):
    inputs = make_inputs(n, t)
    as_double = {k: v.double() if v.is_floating_point() else v for k, v in inputs.items()}
    expected, _ = gae_reference(**as_double, gamma=0.99, lam=0.95)
    adv, _ = gae_triton(**inputs, gamma=0.99, lam=0.95, out=poisoned_out(n, t))
    assert_close(adv.double(), expected, "advantages", rtol=1e-4, atol=1e-4)
