"""The learning benchmark: the table's arithmetic, its files, and a real (tiny) run through the CLI."""

import json

import pytest
import torch

from recurrent_ppo.benchmark import SeedRun, run_benchmark
from recurrent_ppo.cli import main
from recurrent_ppo.config import TrainConfig


def test_reach_is_ninety_percent_of_the_way_from_the_first_return_to_the_best():
    run = SeedRun(1, 0.9, steps=[10, 20, 30, 40], seconds=[1.0, 2.0, 3.0, 4.0],
                  returns=[float("nan"), -1.0, 0.85, 1.0], sps=100.0)
    assert run.reached() == (30, 3.0), "-1 + 0.9 * (1 - -1) = 0.8, first reached by 0.85 at step 30"
    assert SeedRun(1, 0.0, [10], [1.0], [float("nan")], 1.0).reached() == (None, None)


def test_results_tabulate_mean_and_std_over_seeds(tmp_path):
    finals = {("memory", 1): 1.0, ("memory", 2): 3.0, ("cartpole", 1): 5.0, ("cartpole", 2): 5.0}

    def fake_train(cfg):
        final = finals[(cfg.env, cfg.seed)]
        return SeedRun(cfg.seed, final, [100, 200], [0.5, 1.0], [0.0, final], sps=1000.0 * cfg.seed,
                       train_return=final - 0.5)

    lines = []
    results = run_benchmark(["memory", "cartpole"], 2, TrainConfig(), tmp_path, say=lines.append, train=fake_train)
    written = json.loads((tmp_path / "results.json").read_text())
    rows = written["rows"]
    assert [row["task"] for row in rows] == ["memory", "cartpole"]
    assert 0 <= written["seconds"] < 60, "the suite's wall-clock"
    assert (tmp_path / "results.md").read_text().endswith("\n4 runs in 0 s of wall-clock.\n")
    assert rows[0]["final_return_mean"] == 2.0 and rows[0]["final_return_std"] == 1.0
    assert rows[0]["steps_to_reach"] == 200 and rows[0]["sps"] == 1500.0
    assert rows[1]["final_return_std"] == 0.0
    assert rows[0]["train_return_mean"] == 1.5 and rows[0]["best_return_mean"] == 2.0, "means of 0.5, 2.5 and 1, 3"
    table = (tmp_path / "results.md").read_text().splitlines()
    assert table[2].startswith("| memory | 2.000 +- 1.000 (n=2) | - | - | 2.000 +- 1.000 | - | 1.500 |"), table
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert len(lines) == 8 and lines[-1].startswith("[4/4] cartpole seed 2: final return 5.000"), lines
    assert results[1].runs[1].seed == 2


def test_popgym_rows_report_mmer_against_the_published_scores_and_when_it_was_first_reached(tmp_path):
    # CountRecallEasy: PPO-GRU 0.177, best of the 13 models 0.509 (LSTM).
    curves = {1: [-0.5, 0.2, 0.6], 2: [-0.5, 0.1, 0.3]}  # MMERs 0.6 and 0.3: mean 0.45, past PPO-GRU, short of 0.509

    def fake_train(cfg):
        return SeedRun(cfg.seed, 0.0, [100, 200, 300], [1.0, 2.0, 3.0], curves[cfg.seed], sps=10.0,
                       sampled_return=0.25)

    [result] = run_benchmark(["popgym/CountRecallEasy"], 2, TrainConfig(), tmp_path, say=lambda line: None,
                             train=fake_train)
    row = result.row()
    assert row["best_return_mean"] == pytest.approx(0.45) and row["best_return_std"] == pytest.approx(0.15)
    assert (row["published_ppo_gru"], row["published_best"], row["published_best_model"]) == (0.177, 0.509, "LSTM")
    assert row["reached_ppo_gru"] and not row["reached_best"]
    assert row["seeds_reaching_ppo_gru"] == 2
    assert row["steps_to_ppo_gru"] == 250 and row["seconds_to_ppo_gru"] == 2.5, "seed 1 at 200 steps, seed 2 at 300"
    assert row["sampled_return_mean"] == 0.25 and row["changed_since_paper"]
    line = (tmp_path / "results.md").read_text().splitlines()[2]
    assert line.startswith("| popgym/CountRecallEasy | 0.450 +- 0.150 (n=2) | 0.177 / 0.509 (LSTM) (task changed "
                           "since) ✓ | 250 steps, 2 s (2/2 seeds) | 0.000 +- 0.000 | 0.250 |"), line


def test_a_published_score_never_reached_says_so():
    from recurrent_ppo.benchmark import TaskResult, markdown_table

    result = TaskResult("popgym/RepeatFirstEasy", [SeedRun(1, 0.5, [100], [1.0], [0.5], sps=1.0)])
    row = result.row()
    assert not row["reached_ppo_gru"] and row["seeds_reaching_ppo_gru"] == 0
    assert "| 1.000 / 1.000 (GRU) | not reached |" in markdown_table([row])


def test_published_scores_are_reached_at_the_precision_the_paper_prints():
    from recurrent_ppo.benchmark import TaskResult

    # A return of float32 rewards summed to one lands under 1.0; the paper prints 1.000 and 0.995.
    whole = TaskResult("popgym/RepeatFirstEasy", [SeedRun(1, 1.0, [100, 200], [1.0, 2.0], [0.5, 0.9999992], sps=1.0)])
    assert whole.row()["reached_ppo_gru"] and whole.row()["steps_to_ppo_gru"] == 200
    near = [SeedRun(seed, 0.0, [100], [1.0], [mmer], sps=1.0) for seed, mmer in ((1, 0.9953), (2, 0.9944))]
    assert TaskResult("popgym/NoisyPositionOnlyCartPoleEasy", near).row()["reached_ppo_gru"], "mean 0.99485"
    below = [SeedRun(1, 0.0, [100], [1.0], [0.99449], sps=1.0)]
    row = TaskResult("popgym/NoisyPositionOnlyCartPoleEasy", below).row()
    assert not row["reached_ppo_gru"] and row["seeds_reaching_ppo_gru"] == 0


def test_an_empty_suite_is_refused(tmp_path):
    with pytest.raises(ValueError, match="the suite has no tasks"):
        run_benchmark([], 1, TrainConfig(), tmp_path)


@pytest.mark.slow(seconds=6)
def test_benchmark_command_trains_the_memory_suite_two_runs_at_a_time(tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["benchmark", "--suite", "memory", "--seeds", "1", "--steps", "256", "--num-envs", "4",
                 "--num-steps", "32", "--seq-len", "8", "--num-minibatches", "2", "--hidden-dim", "8",
                 "--update-epochs", "1", "--eval-episodes", "2", "--device", "cpu", "--compile-mode", "off",
                 "--processes", "2", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "benchmark memory: 2 tasks x 1 seeds of 256 steps" in printed
    assert "2 runs, 2 at a time, each in a process of its own" in printed
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [row["task"] for row in rows] == ["memory", "stateless-cartpole"], "the suite's order, however they end"
    assert all(len(row["final_returns"]) == 1 for row in rows)
    assert all((out / "runs" / f"{task}-s1" / "metrics.jsonl").is_file() for task in ("memory", "stateless-cartpole"))
    assert main(["benchmark", "--processes", "0"]) == 2
    assert "--processes 0 must be >= 1" in capsys.readouterr().err


def test_each_benchmark_process_takes_its_share_of_the_cores(monkeypatch):
    from recurrent_ppo import benchmark

    threads = torch.get_num_threads()
    try:
        monkeypatch.setattr(benchmark, "available_cores", lambda: 16)
        benchmark.share_threads(2)
        assert torch.get_num_threads() == 8
        monkeypatch.setattr(benchmark, "available_cores", lambda: 2)
        benchmark.share_threads(4)
        assert torch.get_num_threads() == 1, "at least one"
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow(seconds=5)
def test_compiled_runs_one_after_another_do_not_pile_up_recompiles(tmp_path):
    # Each run compiles the same functions of new modules; without a reset between runs the guards pile up on the
    # same code objects and a later run hits the recompile limit (the ninth task of a suite, at the limit of 8).
    # config.patch, not monkeypatch: undoing a monkeypatch of a torch config module deletes the setting.
    base = TrainConfig(num_envs=4, num_steps=16, seq_len=8, total_steps=64, hidden_dim=8, num_minibatches=2,
                       update_epochs=1, eval_episodes=0, device="cpu", compile_mode="default", compile_backend="eager")
    limit = torch._dynamo.config.recompile_limit
    with torch._dynamo.config.patch(recompile_limit=1):
        results = run_benchmark(["memory", "stateless-cartpole", "cartpole"], 1, base, tmp_path, say=lambda line: None)
    assert torch._dynamo.config.recompile_limit == limit, "the setting is back"
    assert [len(result.runs) for result in results] == [1, 1, 1]


def test_a_suite_can_be_a_list_of_envs_named_as_for_train(tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["benchmark", "--suite", "memory,recurrent_ppo.envs.memory:CueMemory", "--seeds", "1", "--steps", "64",
                 "--num-envs", "4", "--num-steps", "16", "--seq-len", "8", "--num-minibatches", "2",
                 "--hidden-dim", "8", "--update-epochs", "1", "--eval-episodes", "0", "--device", "cpu",
                 "--compile-mode", "off", "--out", str(out)]) == 0
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [row["task"] for row in rows] == ["memory", "recurrent_ppo.envs.memory:CueMemory"]
    assert main(["benchmark", "--suite", "memory,no such env"]) == 2
    assert "'no such env'] is not a suite" in capsys.readouterr().err
