"""The benchmark suites (bench/) run and record what they should; bench/check.py gates regressions; the
CleanRL-style baseline computes the same function as our policy, so comparing their speed is fair."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from recurrent_ppo.kernels.gae import gae_reference
from recurrent_ppo.models import RecurrentPolicy
from recurrent_ppo.spaces import Box, Discrete
from tests.helpers import assert_close

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
LAB = BENCH / "gae_lab"
CHECK = BENCH / "check.py"


def _load_bench_module(name: str):
    """Import bench/<name>.py, e.g. "machine" or "gae_lab/gae_sweep" (bench/ is a folder of scripts, not a
    package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name.replace('/', '_')}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # where dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _bench_env() -> dict[str, str]:
    # As `make bench` runs: without the test suite's TRITON_INTERPRET (tests/conftest.py sets it on CPU), and
    # without pytest-xdist's worker variables, under which pytest-benchmark would not time anything.
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("PYTEST_XDIST", "PYTEST_CURRENT_TEST")) and name != "TRITON_INTERPRET"}
    return env


def _check(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CHECK), *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, worker_id) -> tuple[dict, str]:
    """One run of every suite at the tiny profile (no compile modes): its JSON and its terminal output. One run
    per test session: pytest-xdist workers share it through their common temporary folder, under a lock."""
    from filelock import FileLock  # a dependency of torch

    shared = tmp_path_factory.getbasetemp().parent if worker_id != "master" else tmp_path_factory.mktemp("bench")
    out, stdout = shared / "bench-tiny.json", shared / "bench-tiny.out"
    with FileLock(str(shared / "bench-tiny.lock")):
        if not out.is_file():
            proc = subprocess.run(
                [sys.executable, "-m", "pytest", "bench", "--bench-profile", "tiny", "--benchmark-enable",
                 f"--benchmark-json={out}", "-p", "no:cacheprovider", "-q"],
                capture_output=True, text=True, cwd=ROOT, env=_bench_env(), timeout=300)
            if proc.returncode != 0:
                out.unlink(missing_ok=True)
            assert proc.returncode == 0, (f"bench suites failed (tiny profile):\n{proc.stdout[-6000:]}\n"
                                          f"{proc.stderr[-3000:]}")
            stdout.write_text(proc.stdout)
    return json.loads(out.read_text()), stdout.read_text()


@pytest.mark.slow(seconds=12)
def test_suites_record_expected_benchmarks(tiny_run):
    data, _ = tiny_run
    names = {b["name"] for b in data["benchmarks"]}
    expected = {"test_calibration", "test_gae[cleanrl_loop-N16-T8]", "test_rollout_step[off]", "test_ppo_step[off]",
                "test_train_iteration[ours-off]", "test_train_iteration[cleanrl]",
                "test_suite_rollout_step[stateless-cartpole]", "test_suite_rollout_step[popgym/CountRecallEasy]"}
    assert expected <= names, f"missing benchmarks: {sorted(expected - names)}; got {sorted(names)}"
    assert not any("default" in n or "reduce-overhead" in n or "compiled" in n for n in names), \
        f"the tiny profile must run no compile modes, got {sorted(names)}"
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        assert bench["stats"]["median"] > 0 and bench["stats"]["rounds"] >= 2, bench["name"]
        assert "peak_memory_bytes" in info, bench["name"]
        assert (info["peak_memory_bytes"] is None) == (not torch.cuda.is_available()), bench["name"]
        assert info["env_steps_per_s"] > 0, bench["name"]
        assert info["calibration_median_s"] > 0 and info["calibration_iqr_s"] >= 0, bench["name"]  # the gate's


def test_suites_record_machine_info(tiny_run):
    data, _ = tiny_run
    info = data["machine_info"]
    machine = _load_bench_module("machine")
    assert info["bench_machine_id"] == machine.machine_id()
    assert info["bench_profile"] == "tiny"
    assert info["torch"] == torch.__version__
    for key in ("triton", "cpu_model", "cpu_count", "gpu_name", "gpu_driver", "cuda", "load_average_at_start"):
        assert key in info, f"machine_info lacks {key!r}"
    if torch.cuda.is_available():
        assert info["gpu_name"] == torch.cuda.get_device_name()


def test_session_reports_ours_over_baseline(tiny_run):
    _, stdout = tiny_run
    assert "ours vs CleanRL-style baseline" in stdout
    report = stdout.split("ours vs CleanRL-style baseline", 1)[1]
    assert "ours-off" in report and "x baseline" in report, report[:2000]
    suite = stdout.split("rollout step per task, vs stateless-cartpole's", 1)[1]
    assert "popgym/RepeatPreviousEasy" in suite and "x baseline" in suite, suite[:2000]


def test_machine_id_is_a_safe_folder_name():
    machine_id = _load_bench_module("machine").machine_id()
    assert machine_id and all(c.isalnum() or c in "._-" for c in machine_id), machine_id
    assert "torch-" in machine_id and "triton-" in machine_id


# --- bench/check.py -------------------------------------------------------------------------------------------

def _doctored(data: dict, name: str, factor: float) -> dict:
    slower = copy.deepcopy(data)
    for bench in slower["benchmarks"]:
        if bench["name"] == name:
            bench["stats"]["median"] *= factor
    return slower


def _write(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_check_passes_on_unchanged_run(tiny_run, tmp_path):
    data, _ = tiny_run
    path = _write(tmp_path / "run.json", data)
    proc = _check("compare", path, path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK" in proc.stdout


def test_check_fails_on_planted_regression(tiny_run, tmp_path):
    data, _ = tiny_run
    name = "test_train_iteration[ours-off]"
    baseline = _write(tmp_path / "baseline.json", data)
    current = _write(tmp_path / "current.json", _doctored(data, name, 1.25))
    proc = _check("compare", baseline, current)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    regressed = [line for line in proc.stdout.splitlines() if "REGRESSION" in line]
    assert len(regressed) == 1 and name in regressed[0] and "+25.0%" in regressed[0], proc.stdout
    # The threshold is configurable: 25% slower passes a 30% gate.
    assert _check("compare", baseline, current, "--threshold", "30").returncode == 0


def test_check_fails_on_missing_benchmark_unless_allowed(tiny_run, tmp_path):
    data, _ = tiny_run
    subset = copy.deepcopy(data)
    subset["benchmarks"] = subset["benchmarks"][1:]
    baseline, current = _write(tmp_path / "baseline.json", data), _write(tmp_path / "current.json", subset)
    proc = _check("compare", baseline, current)
    assert proc.returncode == 1 and "MISSING" in proc.stdout, proc.stdout
    assert _check("compare", baseline, current, "--allow-missing").returncode == 0


def test_check_refuses_other_machine(tiny_run, tmp_path):
    data, _ = tiny_run
    other = copy.deepcopy(data)
    other["machine_info"]["bench_machine_id"] = "some-other-gpu_torch-0_triton-0"
    proc = _check("compare", _write(tmp_path / "a.json", data), _write(tmp_path / "b.json", other))
    assert proc.returncode == 2 and "bench_machine_id" in proc.stderr, proc.stderr


def test_gate_without_baseline_fails_plainly_unless_recording(tiny_run, tmp_path):
    data, _ = tiny_run
    machine_dir = tmp_path / "some-machine"
    machine_dir.mkdir()
    _write(machine_dir / "latest.json", data)
    proc = _check("gate", machine_dir)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "No stored baseline for this machine" in proc.stderr and "RECORD=1" in proc.stderr, proc.stderr
    assert not (machine_dir / "baseline.json").exists()

    proc = _check("gate", machine_dir, "--record-if-missing")
    assert proc.returncode == 0 and (machine_dir / "baseline.json").is_file(), proc.stdout + proc.stderr
    recorded = json.loads((machine_dir / "baseline.json").read_text())
    assert all("data" not in b["stats"] and b["stats"]["median"] > 0 for b in recorded["benchmarks"])
    assert _check("gate", machine_dir).returncode == 0  # now it compares the run with itself


CALIBRATION_FULLNAME = "bench/test_calibration.py::test_calibration"


def _synthetic_run(timings: dict[str, tuple[float, float]], iqr_share: float = 0.02) -> dict:
    """A pytest-benchmark JSON: per full name, (median, calibration median) in seconds, each IQR `iqr_share` of
    its median."""
    benchmarks = [{"name": name.split("::")[-1], "fullname": name,
                   "stats": {"median": median, "iqr": median * iqr_share},
                   "extra_info": {"calibration_median_s": calibration, "calibration_iqr_s": calibration * iqr_share}}
                  for name, (median, calibration) in timings.items()]
    return {"machine_info": {"bench_machine_id": "some-machine", "bench_profile": "cpu"}, "benchmarks": benchmarks}


SYNTHETIC = {CALIBRATION_FULLNAME: (0.004, 0.004), "bench/test_ppo_step.py::test_ppo_step[off]": (0.012, 0.0041),
             "bench/test_train_iteration.py::test_train_iteration[ours-off]": (0.27, 0.0043)}


def _scaled(timings: dict[str, tuple[float, float]], factor: float) -> dict[str, tuple[float, float]]:
    """Every median and calibration median `factor` times: the same code on a machine that slower."""
    return {name: (median * factor, calibration * factor) for name, (median, calibration) in timings.items()}


def test_check_relative_passes_an_unchanged_run_and_reports_the_spread():
    check = _load_bench_module("check")
    run = _synthetic_run(SYNTHETIC)
    rows = {row.name: row for row in check.compare(run, run, 10)}
    assert rows.pop(CALIBRATION_FULLNAME).status == "calibration"
    assert {row.status for row in rows.values()} == {"ok"} and check.exit_code(list(rows.values()), False) == 0
    for row in rows.values():  # two medians over two calibration medians, each 2% spread, in quadrature
        assert row.change == pytest.approx(0.0) and row.spread == pytest.approx(0.04)


def test_a_regression_is_run_again_and_only_one_slow_in_both_runs_fails(tmp_path):
    """`regressed` names the slow benchmark; `keep-best` keeps a re-run's faster timing, so one slow stretch
    passes the gate while a regression slow in both runs still fails it."""
    check = _load_bench_module("check")
    name = "bench/test_ppo_step.py::test_ppo_step[off]"
    slow = {**SYNTHETIC, name: (SYNTHETIC[name][0] * 1.25, SYNTHETIC[name][1])}
    (tmp_path / "baseline.json").write_text(json.dumps(_synthetic_run(SYNTHETIC)))
    for rerun, expected in ((SYNTHETIC, 0), (slow, 1)):
        (tmp_path / "latest.json").write_text(json.dumps(_synthetic_run(slow)))
        assert check.regressed(tmp_path, 10) == [name]
        (tmp_path / "rerun.json").write_text(json.dumps(_synthetic_run({name: rerun[name]})))
        assert check.keep_best(tmp_path, tmp_path / "rerun.json") == 0
        assert check.run_gate(tmp_path, 10, False, False) == expected


def test_check_relative_passes_a_machine_uniformly_slower_today():
    """Every median 1.5x, the calibrations' too: the ratios stand, so nothing fails (it would in --absolute)."""
    check = _load_bench_module("check")
    baseline, slower = _synthetic_run(SYNTHETIC), _synthetic_run(_scaled(SYNTHETIC, 1.5))
    rows = check.compare(baseline, slower, 10)
    assert check.exit_code(rows, False) == 0
    assert all(row.change == pytest.approx(0.5 if row.status == "calibration" else 0.0) for row in rows)
    absolute = check.compare(baseline, slower, 10, absolute=True)
    assert {row.status for row in absolute} == {"REGRESSION"} and check.exit_code(absolute, False) == 1


def test_check_relative_fails_a_planted_regression_on_a_slower_machine():
    check = _load_bench_module("check")
    name = "bench/test_ppo_step.py::test_ppo_step[off]"
    baseline = _synthetic_run(SYNTHETIC)
    slower = _scaled(SYNTHETIC, 1.5)
    current = _synthetic_run({**slower, name: (slower[name][0] * 1.25, slower[name][1])})
    rows = {row.name: row for row in check.compare(baseline, current, 10)}
    assert rows[name].status == "REGRESSION" and rows[name].change == pytest.approx(0.25)
    assert [row.name for row in rows.values() if row.status == "REGRESSION"] == [name]
    assert check.exit_code(list(rows.values()), False) == 1
    assert check.exit_code(check.compare(baseline, current, 30), False) == 0  # within a 30% gate


def test_check_without_calibration_exits_2_and_says_to_re_record(tmp_path, capsys):
    check = _load_bench_module("check")
    old = _synthetic_run(SYNTHETIC)  # as recorded before the calibration: no calibration medians
    for bench in old["benchmarks"]:
        del bench["extra_info"]
    machine_dir = tmp_path / "some-machine"
    machine_dir.mkdir()
    _write(machine_dir / "baseline.json", old)
    _write(machine_dir / "latest.json", _synthetic_run(SYNTHETIC))
    assert check.main(["gate", str(machine_dir)]) == 2
    error = capsys.readouterr().err
    assert "the baseline has no calibration median" in error and "make bench RECORD=1" in error, error
    assert check.main(["gate", str(machine_dir), "--absolute"]) == 0  # the old comparison still reads it


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_bench_check_without_baseline_fails_before_running(tmp_path):
    # -o: never rebuild the venv from inside a test. With no baseline, the target stops before any benchmark.
    proc = subprocess.run(["make", "-s", "-o", ".venv/.installed", "bench-check", f"PY={sys.executable}",
                           f"BENCH_BASELINES={tmp_path}"], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env=_bench_env())
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "No stored baseline for this machine" in proc.stderr, proc.stdout + proc.stderr
    assert "passed" not in proc.stdout  # no benchmark ran


# --- the baseline computes what we compute ----------------------------------------------------------------------

def test_cleanrl_gae_matches_reference():
    cleanrl_gae = _load_bench_module("cleanrl_baseline").cleanrl_gae
    n, t = 37, 63
    terminated = torch.rand(n, t) < 0.05
    truncated = (torch.rand(n, t) < 0.03) & ~terminated
    inputs = dict(rewards=torch.randn(n, t, dtype=torch.float64), values=torch.randn(n, t, dtype=torch.float64),
                  terminated=terminated, truncated=truncated,
                  truncated_values=torch.randn(n, t, dtype=torch.float64),
                  last_values=torch.randn(n, dtype=torch.float64))
    advantages, returns = cleanrl_gae(**inputs, gamma=0.99, gae_lambda=0.95)
    expected = gae_reference(**inputs, gamma=0.99, lam=0.95)
    assert_close(advantages, expected[0], "advantages")
    assert_close(returns, expected[1], "returns")


def test_cleanrl_agent_matches_our_policy_with_resets():
    """With our weights, CleanRL's step-by-step nn.LSTM with done masks gives our BPTT's log-probs, values and
    entropies: the baseline does the same computation, implemented the CleanRL way."""
    Agent = _load_bench_module("cleanrl_baseline").Agent
    obs_dim, num_actions, hidden, layers, batch, seq = 3, 4, 16, 2, 5, 9
    policy = RecurrentPolicy(Box((obs_dim,)), Discrete(num_actions), hidden, layers)
    agent = Agent(obs_dim, num_actions, hidden, layers)
    names = {"encoder.": "network.", "core.": "lstm.", "head.linear.": "actor."}  # ours -> CleanRL's
    state = {next((new + k[len(old):] for old, new in names.items() if k.startswith(old)), k): v
             for k, v in policy.state_dict().items()}
    agent.load_state_dict(state)

    obs = torch.randn(batch, seq, obs_dim)
    actions = torch.randint(num_actions, (batch, seq))
    starts = torch.rand(batch, seq) < 0.3
    h0, c0 = torch.randn(layers, batch, hidden), torch.randn(layers, batch, hidden)
    ours = policy.evaluate_actions(obs, (h0, c0), starts, actions)

    def time_major(x: torch.Tensor) -> torch.Tensor:  # [B, L, ...] -> [L * B, ...], CleanRL's flat layout
        return x.transpose(0, 1).reshape(-1, *x.shape[2:])

    def batch_major(x: torch.Tensor) -> torch.Tensor:  # [L * B] -> [B, L]
        return x.reshape(seq, batch).T

    _, log_prob, entropy, value, _ = agent.get_action_and_value(
        time_major(obs), (h0, c0), time_major(starts.float()), time_major(actions))
    assert_close(batch_major(log_prob), ours.log_prob, "log_prob", atol=1e-5, rtol=1e-5)
    assert_close(batch_major(value.flatten()), ours.value, "value", atol=1e-5, rtol=1e-5)
    assert_close(batch_major(entropy), ours.entropy, "entropy", atol=1e-5, rtol=1e-5)


# --- the GAE lab (bench/gae_lab): floor, sweep and PTX scripts ---------------------------------------------------

@pytest.mark.slow(seconds=16)
def test_gae_sweep_checks_every_candidate_config(tmp_path, monkeypatch):
    """Every tile the sweep would time, the op's and the lab's, gives the float64 reference's advantages (the
    interpreter on CPU), at a size where each time tile crosses a chunk boundary and each env tile of 2 or more
    envs is partly masked; at a short rollout, only the tiles that fit it run. Candidates that differ in launch
    options alone are one interpreted program, run once."""
    sweep = _load_bench_module("gae_lab/gae_sweep")
    runs = []
    time_candidate = sweep.time_candidate
    monkeypatch.setattr(sweep, "time_candidate", lambda candidate, *args: runs.append(candidate) or
                        time_candidate(candidate, *args))
    out = tmp_path / "sweep.json"
    assert sweep.main(["--sizes", "3x33,3x520", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    candidates = [sweep.label(*candidate) for candidate in sweep.CANDIDATES]
    short = [sweep.label(*candidate) for candidate in sweep.CANDIDATES if candidate[1] <= 64]
    assert len(set(candidates)) == len(candidates) > len(short) > 0
    assert [row["checked"] for row in rows] == [short, candidates]
    assert [row["failed"] for row in rows] == [{}, {}]
    programs = {sweep.interpreted_program(candidate) for candidate in sweep.CANDIDATES}
    assert len(runs) == len({sweep.interpreted_program(c) for c in sweep.CANDIDATES if c[1] <= 64}) + len(programs)
    assert len(programs) < len(candidates)


def test_gae_tile_table_holds_checked_candidates_for_every_benchmark_size():
    """The op's table covers the sizes the sweep measures, with tiles of the sweep's (interpreter-checked)
    candidates that the op's kernel runs, and the sweep writes it back as the same module."""
    sweep = _load_bench_module("gae_lab/gae_sweep")
    from recurrent_ppo.kernels import gae_tiles

    assert set(gae_tiles.TILES) == set(sweep.CUDA_SIZES)
    op_candidates = {sweep.op_tile(candidate): candidate for candidate in sweep.CANDIDATES
                     if sweep.op_tile(candidate) is not None}
    assert set(gae_tiles.TILES.values()) <= set(op_candidates)
    rows = [{"num_envs": n, "num_steps": t, "op_best": sweep.label(*op_candidates[tile])}
            for (n, t), tile in gae_tiles.TILES.items()]
    measured_on = gae_tiles.__doc__.split("Measured on: ", 1)[1].rstrip().removesuffix(".")
    assert sweep.tiles_module(rows, measured_on) == Path(gae_tiles.__file__).read_text()


def test_gae_sweep_checks_the_advantages_only_kernel(tmp_path, monkeypatch):
    """--advantages-only sweeps the kernel as the trainer launches it (returns=False), each tile checked."""
    sweep = _load_bench_module("gae_lab/gae_sweep")
    candidates = [(1, 32, 1, None, False, False, True), (2, 32, 1, None, True, True, False)]
    monkeypatch.setattr(sweep, "CANDIDATES", candidates)
    out = tmp_path / "sweep.json"
    assert sweep.main(["--sizes", "5x33", "--advantages-only", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["returns"] is False
    assert report["rows"][0]["checked"] == ["1x32/w1", "2x32/w1/g/a/tv"] and report["rows"][0]["failed"] == {}


def test_gae_sweep_refuses_to_write_tiles_without_a_gpu(tmp_path):
    sweep = _load_bench_module("gae_lab/gae_sweep")
    if torch.cuda.is_available():
        pytest.skip("the refusal is for CPU machines")
    with pytest.raises(SystemExit):
        sweep.main(["--sizes", "5x33", "--write-tiles", str(tmp_path / "tiles.py")])
    assert not (tmp_path / "tiles.py").exists()


def test_gae_sweep_records_a_failing_config_and_goes_on(tmp_path, monkeypatch):
    sweep = _load_bench_module("gae_lab/gae_sweep")
    # 3 envs: not a power of two, so that tile fails to build
    candidates = [(3, 16, 1, None, False, False, True), (8, 16, 1, None, False, True, False)]
    monkeypatch.setattr(sweep, "CANDIDATES", candidates)
    out = tmp_path / "sweep.json"
    assert sweep.main(["--sizes", "5x20", "--json", str(out)]) == 1
    [row] = json.loads(out.read_text())["rows"]
    assert row["checked"] == ["8x16/w1/a/tv"] and list(row["failed"]) == ["3x16/w1"]


def test_gae_floor_runs_and_reports_each_provider(tmp_path):
    floor = _load_bench_module("gae_lab/gae_floor")
    out = tmp_path / "floor.json"
    assert floor.main(["--sizes", "8x16", "--compile-sizes", "", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["copy_bytes_per_s"] > 0 and report["launch_us"] > 0
    [row] = report["rows"]
    assert (row["num_envs"], row["num_steps"]) == (8, 16) and row["cleanrl_loop_us"] > 0


STUB_US = {"memset": 10.0, "read": 8.0, "none": 6.0}  # stub timings by flush, in us


def _stub_cuda(module, monkeypatch) -> list[bool]:
    """Run a GAE bench script's CUDA-only branch here: CPU tensors, kernels through the interpreter, CUDA graphs
    as plain calls, copy 3 TB/s, launch 4 us (5 graphed), and STUB_US for every timing. A slip in that
    bookkeeping would otherwise first show on a lent GPU's minutes; the stub figures test the arithmetic, not
    speed. Returns the `returns` flag of each same-bytes copy built, where the module builds them."""
    cpu_inputs = module.benchlib.gae_inputs
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "stub GPU")
    monkeypatch.setattr(module.benchlib, "gae_inputs", lambda n, t, device: cpu_inputs(n, t, torch.device("cpu")))
    monkeypatch.setattr(module.benchlib, "cuda_graphed", lambda fn: fn)
    monkeypatch.setattr(module, "copy_bandwidth", lambda device: 3e12)
    monkeypatch.setattr(module, "launch_us", lambda device, flush="memset", graphed=False: 5.0 if graphed else 4.0)
    monkeypatch.setattr(module, "time_us", lambda fn, device, rep_ms=200, flush="memset": STUB_US[flush])
    copies = []
    if hasattr(module, "same_bytes_copy"):
        monkeypatch.setattr(module, "same_bytes_copy", lambda inputs, device, returns=True: copies.append(returns))
    return copies


def test_gae_floor_cuda_branch_runs_with_the_device_stubbed(monkeypatch, capsys, tmp_path):
    """gae_floor's CUDA-only columns, both floors and the three tables, with the device stubbed (_stub_cuda)."""
    floor = _load_bench_module("gae_lab/gae_floor")
    copies = _stub_cuda(floor, monkeypatch)
    out = tmp_path / "floor.json"
    assert floor.main(["--sizes", "8x16", "--compile-sizes", "", "--json", str(out)]) == 0
    [row] = json.loads(out.read_text())["rows"]
    assert row["floor_us"] == row["floor_adv_us"] == row["floor_tv_whole_us"] == 4.0  # launch-bound
    assert row["floor_graph_launch_us"] == 5.0
    for provider in ("cleanrl_loop", "triton_loop", "triton", "triton_graph", "triton_graph_adv"):
        assert row[f"{provider}_us"] == STUB_US["memset"], provider
    assert row["triton_graph_adv_read_flush_us"] == row["triton_graph_read_flush_us"] == STUB_US["read"]
    assert row["triton_graph_warm_us"] == STUB_US["none"] and copies == [True, False]
    printed = capsys.readouterr().out
    assert "Advantages only" in printed and "stub GPU" in printed
    assert printed.count(" 2.50 ") >= 3, printed  # 10 us over the 4 us floor: graph, triton and adv
    verdicts = json.loads(out.read_text())["acceptance"]
    assert set(verdicts) == {"triton_graph_adv", "triton_graph", "triton_graph vs floor_tv_whole"}
    assert verdicts["triton_graph_adv"] == {"sizes": 1, "over_2x_floor": ["8x16: 2.50"],
                                            "cleanrl_speedup_4096x128": None}
    assert "triton_graph_adv: within 2x of floor_adv_us at 0 of 1 sizes (over: 8x16: 2.50)" in printed
    assert "triton_graph: within 2x of floor_tv_whole_us at 0 of 1 sizes" in printed


def test_gae_floor_acceptance_counts_each_call_against_its_own_floor():
    """The floor verdict per call: sizes over 2x their own floor, and the CleanRL loop's speedup at 4096x128."""
    floor = _load_bench_module("gae_lab/gae_floor")
    rows = [{"num_envs": 4096, "num_steps": 128, "floor_us": 4.8, "floor_adv_us": 4.8, "floor_tv_whole_us": 4.8,
             "cleanrl_loop_us": 19_210.0, "triton_graph_us": 10.5, "triton_graph_adv_us": 8.0},
            {"num_envs": 131072, "num_steps": 512, "floor_us": 405.0, "floor_adv_us": 316.0,
             "floor_tv_whole_us": 491.0, "cleanrl_loop_us": 104_746.0, "triton_graph_us": 900.0,
             "triton_graph_adv_us": 700.0}]
    verdicts = floor.acceptance(rows)
    assert verdicts["triton_graph"]["over_2x_floor"] == ["4096x128: 2.19", "131072x512: 2.22"]
    assert verdicts["triton_graph_adv"]["over_2x_floor"] == ["131072x512: 2.22"]  # its own, lower floor
    assert verdicts["triton_graph vs floor_tv_whole"]["over_2x_floor"] == ["4096x128: 2.19"]  # runs 1-5's floor
    assert verdicts["triton_graph"]["cleanrl_speedup_4096x128"] == pytest.approx(19_210.0 / 10.5)
    assert verdicts["triton_graph_adv"]["cleanrl_speedup_4096x128"] == pytest.approx(19_210.0 / 8.0)


def test_gae_floor_counts_truncated_values_by_the_sectors_holding_a_truncated_step():
    """The floor's bytes: truncated_values by the 32-byte sectors holding a truncated step (env-major, as the
    buffer stores it, placed by the tensor's address), every other input whole, and the outputs written;
    `truncated_values_whole` counts it whole, as runs 1-5 did."""
    floor = _load_bench_module("gae_lab/gae_floor")
    shape = (3, 10)
    truncated = torch.zeros(shape, dtype=torch.bool)
    truncated[0, 1] = truncated[0, 3] = truncated[2, 9] = True  # steps 1, 3 and 29: float32 sectors 0 and 3
    inputs = dict(rewards=torch.zeros(shape), values=torch.zeros(shape),
                  terminated=torch.zeros(shape, dtype=torch.bool), truncated=truncated,
                  truncated_values=torch.zeros(shape), last_values=torch.zeros(3))
    others = 120 + 120 + 30 + 30 + 12  # rewards, values, both masks, last_values
    assert floor.gae_bytes(inputs) == others + 2 * 32 + 240
    assert floor.gae_bytes(inputs, returns=False) == others + 2 * 32 + 120
    assert floor.gae_bytes(inputs, truncated_values_whole=True) == others + 120 + 240
    assert floor.gae_bytes({**inputs, "truncated": torch.zeros(shape, dtype=torch.bool)}) == others + 240
    truncated = torch.zeros(shape, dtype=torch.bool)
    truncated[0, 1] = truncated[0, 9] = True  # steps 1 and 9: two float32 sectors, one of 16 bfloat16 steps
    bf16 = {**inputs, "truncated": truncated, "truncated_values": torch.zeros(shape, dtype=torch.bfloat16)}
    assert floor.gae_bytes(bf16) == others + 32 + 240
    assert floor.gae_bytes({**bf16, "truncated_values": torch.zeros(shape)}) == others + 2 * 32 + 240
    # Steps 1 and 6 share float32 sector 0 when truncated_values starts on a sector, and straddle two when a view
    # starts 3 steps into one (slots 4 and 9); 1 step in, they share one again (slots 2 and 7).
    truncated = torch.zeros(shape, dtype=torch.bool)
    truncated[0, 1] = truncated[0, 6] = True
    base = torch.zeros(64)
    assert base.data_ptr() % 32 == 0  # CPU allocations are 64-byte aligned
    for lead, sectors in ((0, 1), (3, 2), (1, 1)):
        shifted = {**inputs, "truncated": truncated, "truncated_values": base[lead:lead + 30].view(shape)}
        assert floor.gae_bytes(shifted) == others + sectors * 32 + 240


def test_gae_sweep_cuda_branch_writes_the_tile_table_with_the_device_stubbed(monkeypatch, tmp_path):
    """gae_sweep's CUDA-only branch with the device stubbed (_stub_cuda): each candidate checked eagerly and
    replayed, timed, and the table written as a module naming the advantages-only sweep."""
    sweep = _load_bench_module("gae_lab/gae_sweep")
    _stub_cuda(sweep, monkeypatch)
    candidates = [(1, 32, 1, None, False, False, True), (2, 32, 1, None, True, True, False)]
    monkeypatch.setattr(sweep, "CANDIDATES", candidates)
    out, tiles = tmp_path / "sweep.json", tmp_path / "tiles.py"
    assert sweep.main(["--sizes", "5x33", "--advantages-only", "--json", str(out), "--write-tiles", str(tiles)]) == 0
    [row] = json.loads(out.read_text())["rows"]
    assert row["floor_us"] == 4.0 and row["configs_us"] == {"1x32/w1": 10.0, "2x32/w1/g/a/tv": 10.0}
    assert row["best"] == row["op_best"] == "1x32/w1" and "(5, 33): (1, 32, 1, None, False)," in tiles.read_text()
    assert "stub GPU" in tiles.read_text() and "--advantages-only" in tiles.read_text()


def test_gae_sweep_keeps_the_tiles_of_sizes_it_did_not_sweep_and_writes_after_every_size(monkeypatch, tmp_path):
    """A sweep of some sizes rewrites their tiles and keeps the op's table for the rest; stopped after its first
    size (as a lent GPU's time limit stops it), it leaves that size in the table and in the JSON, each file whole."""
    sweep = _load_bench_module("gae_lab/gae_sweep")
    from recurrent_ppo.kernels import gae_tiles

    _stub_cuda(sweep, monkeypatch)
    new_tile = (2, 32, 1, None, False, False, True)  # the op's kernel, at a tile the table does not hold
    assert sweep.op_tile(new_tile) not in gae_tiles.TILES.values()
    monkeypatch.setattr(sweep, "CANDIDATES", [*((*tile, False, True) for tile in gae_tiles.TILES.values()), new_tile])
    sweep_size = sweep.sweep_size

    def stopped_after_the_first_size(n, t, *args):
        if (n, t) != (4096, 128):
            raise KeyboardInterrupt  # what `timeout` sends first is SIGTERM; any stop between sizes looks alike
        row = sweep_size(8, 33, *args)  # the interpreter at a small size stands in for 4096x128
        row["configs_us"] = {name: (1.0 if name == sweep.label(*new_tile) else 10.0) for name in row["configs_us"]}
        return {**row, "num_envs": n, "num_steps": t, "best": sweep.label(*new_tile), "op_best": sweep.label(*new_tile)}

    monkeypatch.setattr(sweep, "sweep_size", stopped_after_the_first_size)
    out, tiles = tmp_path / "sweep.json", tmp_path / "tiles.py"
    with pytest.raises(KeyboardInterrupt):
        sweep.main(["--sizes", "4096x128,1024x512", "--advantages-only", "--json", str(out),
                    "--write-tiles", str(tiles)])
    report = json.loads(out.read_text())
    assert report["sizes_left"] == 1 and [row["best"] for row in report["rows"]] == ["2x32/w1"]
    namespace = {}
    exec(tiles.read_text(), namespace)
    assert namespace["TILES"] == {**gae_tiles.TILES, (4096, 128): (2, 32, 1, None, False)}
    assert list(namespace["TILES"]) == list(gae_tiles.TILES)  # the table's order
    assert "swept 1 of 2 sizes; 11 other sizes kept from the table before" in namespace["__doc__"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["sweep.json", "tiles.py"]  # no partial file left


def test_the_tile_table_takes_the_op_kernels_fastest_tile_when_a_lab_variant_is_faster(monkeypatch, tmp_path,
                                                                                        capsys):
    """The lab's ascending kernel is timed beside the op's, but the op cannot launch it: the table gets the
    fastest tile of the op's kernel, and the sweep says how far behind the lab's variant it is."""
    sweep = _load_bench_module("gae_lab/gae_sweep")
    _stub_cuda(sweep, monkeypatch)
    op, lab = (1, 32, 1, None, False, False, True), (2, 32, 1, None, True, True, False)
    monkeypatch.setattr(sweep, "CANDIDATES", [op, lab])
    monkeypatch.setattr(sweep, "time_candidate", lambda candidate, *args, **kwargs: 4.0 if candidate == lab else 6.0)
    out, tiles = tmp_path / "sweep.json", tmp_path / "tiles.py"
    assert sweep.main(["--sizes", "5x33", "--advantages-only", "--json", str(out), "--write-tiles", str(tiles)]) == 0
    [row] = json.loads(out.read_text())["rows"]
    assert (row["best"], row["op_best"]) == ("2x32/w1/g/a/tv", "1x32/w1")
    assert "(5, 33): (1, 32, 1, None, False)," in tiles.read_text()
    assert "the op's kernel: 1x32/w1 6.0 us, 1.50x the lab's 2x32/w1/g/a/tv" in capsys.readouterr().out


def test_the_sweep_summary_names_the_op_kernels_fastest_tile_beside_the_fastest():
    summarize = _load_bench_module("gae_lab/summarize")
    report = {"rows": [{"num_envs": 8, "num_steps": 32, "floor_us": 4.0, "failed": {}, "op_best": "1x32/w1",
                        "configs_us": {"1x32/w1": 6.0, "2x32/w1/g/a/tv": 4.0}}]}
    _, (header, [row]) = summarize.sweep_tables(report)
    cells = dict(zip(header, row))
    assert (cells["best"], cells["best_us"], cells["op_best"], cells["op_best_us"]) == ("2x32/w1/g/a/tv", "4.00",
                                                                                        "1x32/w1", "6.00")


@pytest.mark.slow(seconds=6)
def test_ascending_tiles_move_16_byte_vectors_and_torch_sees_only_the_outputs_written(tmp_path):
    """Compiled for an H100 (sm_90) here, without one: with time ascending along the tile, each thread loads
    rewards and values and stores both outputs as 16-byte vectors, in fewer memory instructions than the
    descending tile, and neither spills registers; and torch.compile's analysis of either kernel finds only
    advantages and returns written (a failed analysis would have every tensor written, and compiled graphs copy
    each)."""
    out = tmp_path / "ptx.json"
    ascending, descending = (1, 128, 1, None, True, True, True), (1, 128, 1, None, True, False, True)
    proc = subprocess.run([sys.executable, str(LAB / "gae_ptx.py"), "--tiles", repr(ascending), repr(descending),
                           "--json", str(out)], capture_output=True, text=True, cwd=ROOT, env=_bench_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = {tuple(row["tile"]): row for row in json.loads(out.read_text())["rows"]}
    for row in rows.values():
        assert row["writes"] == ["advantages_ptr", "returns_ptr"], row
        assert row["local_bytes"] == 0 and 0 < row["registers"] <= 255, row  # nothing spills
    vectorized = rows[ascending]["instructions"]
    assert vectorized["ld.global.v4.b32"] == 2 and vectorized["st.global.v4.b32"] == 2, vectorized

    def global_accesses(counts: dict[str, int]) -> int:
        return sum(count for name, count in counts.items() if ".global" in name)

    assert global_accesses(vectorized) < global_accesses(rows[descending]["instructions"]) / 2, rows


@pytest.mark.slow(seconds=5)
def test_advantages_only_kernel_stores_one_vector_and_torch_sees_only_advantages_written(tmp_path):
    """With returns=False (the trainer's call) the op's kernel and the lab's ascending one store advantages alone,
    one 16-byte vector per thread on the ascending tile, and torch.compile's analysis finds nothing else written:
    the op passes None for returns, which must not make the analysis fail (and assume every tensor written)."""
    out = tmp_path / "ptx.json"
    ascending, descending = (1, 128, 1, None, True, True, True), (1, 128, 1, None, False, False, True)
    proc = subprocess.run([sys.executable, str(LAB / "gae_ptx.py"), "--tiles", repr(ascending), repr(descending),
                           "--advantages-only", "--json", str(out)],
                          capture_output=True, text=True, cwd=ROOT, env=_bench_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = {tuple(row["tile"]): row for row in json.loads(out.read_text())["rows"]}
    for row in rows.values():
        assert row["writes"] == ["advantages_ptr"], row
        assert row["local_bytes"] == 0, row
    vectorized = rows[ascending]["instructions"]
    assert vectorized["st.global.v4.b32"] == 1 and vectorized["ld.global.v4.b32"] == 2, vectorized
