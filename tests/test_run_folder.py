"""A run folder a user can trust: one process writes it at a time, a killed run's leftovers (a cut metrics line, a
run with no checkpoint yet, temporary checkpoint files) never block the next run, write failures and a second
Ctrl-C end in one line."""

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import recurrent_ppo.runfolder
from recurrent_ppo import checkpoint
from recurrent_ppo.checkpoint import read_checkpoint, save_checkpoint
from recurrent_ppo.cli import main

TINY = ["--env", "cartpole", "--num-envs", "4", "--num-steps", "16", "--seq-len", "4", "--num-minibatches", "2",
        "--update-epochs", "2", "--hidden-dim", "8", "--device", "cpu", "--compile-mode", "off", "--eval-episodes",
        "0", "--no-progress"]
ITERATION = 4 * 16
"""Env steps of one TINY iteration."""


def train(run: Path, iterations: int, *flags: str) -> int:
    return main(["train", *TINY, "--total-steps", str(iterations * ITERATION), "--run-dir", str(run), *flags])


def iterations_logged(run: Path) -> list[int]:
    return [json.loads(line)["iteration"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def one_line(err: str) -> str:
    err = err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_a_run_folder_locked_by_another_process_is_refused_naming_its_pid(tmp_path, capsys):
    run = tmp_path / "run"
    # The holder loads runfolder.py alone (it imports only the standard library), so it starts without torch.
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import importlib.util, sys
        spec = importlib.util.spec_from_file_location("runfolder", {recurrent_ppo.runfolder.__file__!r})
        runfolder = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(runfolder)
        with runfolder.RunFolderLock({str(run)!r}):
            print("locked", flush=True)
            sys.stdin.read()
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        assert train(run, 1) == 2
        err = one_line(capsys.readouterr().err)
        assert f"{run} is in use by another run (pid {holder.pid}" in err, err
        assert not (run / "config.json").exists(), "the refused run wrote nothing"
    finally:
        holder.communicate(input="", timeout=30)
    assert train(run, 1) == 0, "once the holder has ended, the folder (with its lock file) takes a run"
    assert train(run, 1) == 2 and "holds a run" in capsys.readouterr().err
    assert train(run, 2, "--overwrite") == 0, "the refused run let its lock go"


def test_a_cut_last_metrics_line_is_dropped_with_a_warning_and_the_run_resumes(tmp_path, capsys, caplog):
    run = tmp_path / "run"
    assert train(run, 2, "--checkpoint-every", "1") == 0
    metrics = run / "metrics.jsonl"
    with metrics.open("a") as f:
        f.write('{"iteration": 2, "global_step": 19')  # killed while writing the next record
    assert main(["train", "--resume", str(run), "--total-steps", str(3 * ITERATION)]) == 0
    assert f"{metrics}: dropped its last line, an incomplete record" in caplog.text
    assert iterations_logged(run) == [0, 1, 2]


def test_a_corrupt_metrics_line_before_the_last_is_an_error_naming_the_file_and_line(tmp_path, capsys):
    run = tmp_path / "run"
    assert train(run, 2, "--checkpoint-every", "1") == 0
    metrics = run / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    metrics.write_text("\n".join([lines[0], "garbage", *lines[1:]]) + "\n")
    before = metrics.read_text()
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--total-steps", str(3 * ITERATION)]) == 2
    assert f"{metrics}, line 2: not a metrics record" in one_line(capsys.readouterr().err)
    assert metrics.read_text() == before, "the damaged log is left as it was"


def stopped_before_its_first_checkpoint(run: Path) -> None:
    """`run` as a run killed while writing its first checkpoint leaves it: config.json, logs, a temporary file."""
    assert train(run, 2, "--checkpoint-every", "0") == 0
    (run / "checkpoint.pt").rename(run / ".checkpoint.pt.k1ll3d.tmp")
    (run / "summary.json").unlink()


def test_resuming_a_run_that_stopped_before_its_first_checkpoint_starts_it_over(tmp_path, capsys):
    run = tmp_path / "run"
    stopped_before_its_first_checkpoint(run)
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--total-steps", str(3 * ITERATION)]) == 0
    out = capsys.readouterr().out
    assert (f"{run}: no checkpoint was written (the run stopped before its first), so the run starts over with its "
            f"saved configuration, {run / 'config.json'}") in out, out
    assert iterations_logged(run) == [0, 1, 2], "the run was trained from its start, each iteration logged once"
    assert read_checkpoint(run)["iteration"] == 3
    assert not list(run.glob(".checkpoint.pt.*.tmp")), "the killed write's temporary file went at the next save"


def test_training_into_a_run_that_stopped_before_its_first_checkpoint_names_the_command_that_goes_on(
        tmp_path, capsys):
    run = tmp_path / "run"
    stopped_before_its_first_checkpoint(run)
    before = (run / "metrics.jsonl").read_text()
    capsys.readouterr()
    assert train(run, 2) == 2
    err = one_line(capsys.readouterr().err)
    assert f"start it over with its saved configuration with `recurrent-ppo train --resume {run}`" in err, err
    assert "--overwrite" in err, err
    assert (run / "metrics.jsonl").read_text() == before


def test_stale_temporary_checkpoint_files_are_removed_at_the_next_save(tmp_path):
    stale = [tmp_path / ".checkpoint.pt.a1b2c3.tmp", tmp_path / ".checkpoint.pt.x_y.tmp"]
    others = [tmp_path / ".other.pt.a1b2c3.tmp", tmp_path / "checkpoint.pt.tmp"]
    for path in stale + others:
        path.write_bytes(b"\0" * 64)
    save_checkpoint(tmp_path / "checkpoint.pt", {"step": torch.tensor(1)})
    assert not any(path.exists() for path in stale)
    assert all(path.exists() for path in others), "only the checkpoint's own temporary files are removed"
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_a_read_only_run_folder_is_one_line_and_exit_1(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    run.chmod(0o555)
    try:
        assert train(run, 1) == 1
    finally:
        run.chmod(0o755)
    err = one_line(capsys.readouterr().err)
    assert err.startswith(f"recurrent-ppo train: cannot write {run}") and "Permission denied" in err, err


def test_a_run_folder_under_a_file_is_one_line_and_exit_1(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    run = tmp_path / "file" / "run"
    assert train(run, 1) == 1
    err = one_line(capsys.readouterr().err)
    assert err.startswith(f"recurrent-ppo train: cannot write {run}: Not a directory"), err


def test_a_full_disk_at_a_checkpoint_is_one_line_naming_it_and_the_last_good_one(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    real_save = torch.save

    def save_until_the_disk_is_full(state, f):
        if state["iteration"] >= 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_save(state, f)

    monkeypatch.setattr(checkpoint.torch, "save", save_until_the_disk_is_full)
    assert train(run, 3, "--checkpoint-every", "1") == 1
    err = one_line(capsys.readouterr().err)
    kept = run / "checkpoint.pt"
    assert err == (f"recurrent-ppo train: cannot write {kept}: No space left on device; the last good checkpoint is "
                   f"{kept} (resume with: recurrent-ppo train --resume {run})"), err
    assert read_checkpoint(run)["iteration"] == 1, "the checkpoint before the failed write is intact"
    assert not list(run.glob(".checkpoint.pt.*.tmp"))


SLOW_TRAIN = """
import sys, time
from recurrent_ppo import envs
from recurrent_ppo.cli import main
from recurrent_ppo.envs import CartPole

class SlowCartPole(CartPole):
    steps = 0

    def step(self, actions):
        SlowCartPole.steps += 1
        if SlowCartPole.steps == 24:  # the middle of the second iteration: time for two signals within it
            print("mid-iteration", flush=True)
        time.sleep(0.2 if SlowCartPole.steps > 24 else 0.0)
        return super().step(actions)

envs.ENVS["slow-cartpole"] = lambda num_envs, device: SlowCartPole(num_envs, device)
sys.exit(main(sys.argv[1:]))
"""


def test_a_second_ctrl_c_ends_the_run_at_once_with_one_line_and_exit_130(tmp_path):
    run = tmp_path / "run"
    flags = [flag if flag != "cartpole" else "slow-cartpole" for flag in TINY]
    proc = subprocess.Popen([sys.executable, "-c", SLOW_TRAIN, "train", *flags, "--total-steps",
                             str(100 * ITERATION), "--run-dir", str(run)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    while "mid-iteration" not in (line := proc.stdout.readline()):
        assert line, f"the run ended early: {proc.communicate()}"
    proc.send_signal(signal.SIGINT)  # the iteration goes on, 8 steps of 0.2 s
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line and not line.startswith("GPU telemetry off")]
    assert lines == ["recurrent-ppo train: second SIGINT: aborting without a checkpoint; no checkpoint was written"], err


def test_an_existing_run_is_refused_without_overwrite(tmp_path, capsys):
    run = tmp_path / "run"
    flags = [*TINY, "--compile-mode", "off", "--total-steps", "64", "--no-progress", "--run-dir", str(run)]
    assert main(["train", *flags]) == 0
    before = (run / "metrics.jsonl").read_text()
    assert main(["train", *flags]) == 2
    err = capsys.readouterr().err
    assert f"{run} holds a run" in err and "--resume" in err and "--overwrite" in err, err
    assert (run / "metrics.jsonl").read_text() == before, "nothing of the old run was touched"
    assert main(["train", *flags, "--overwrite"]) == 0
