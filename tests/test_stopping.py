"""Stopping a run cleanly: SIGINT and SIGTERM finish the iteration and checkpoint it, a second signal aborts,
the time budget stops with a checkpoint."""

import json
import os
import signal
import time

import pytest

from recurrent_ppo.checkpoint import read_checkpoint
from recurrent_ppo.config import TrainConfig
from recurrent_ppo.stopping import StopRequested
from recurrent_ppo.trainer import Trainer
from tests.helpers import train_process


def test_a_signal_is_recorded_and_a_second_one_aborts():
    previous = signal.getsignal(signal.SIGTERM)
    with StopRequested() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)  # the handler runs in the main thread between bytecodes
        assert stop.signal == signal.SIGTERM and stop.exit_code == 143
        with pytest.raises(KeyboardInterrupt, match="second SIGINT: aborting"):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)
    assert signal.getsignal(signal.SIGTERM) is previous, "the handlers are restored"

# SIGTERM alone: SIGINT takes the same handler and path (stopping.StopRequested; exit code 128 + the signal), and
# test_a_signal_is_recorded_and_a_second_one_aborts and test_run_folder.py's second Ctrl-C show SIGINT handled.
@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143)], ids=["SIGTERM"])
def test_a_signal_finishes_the_iteration_checkpoints_and_exits_cleanly(tmp_path, sig, code):
    run = tmp_path / "run"
    proc = train_process(run, "--compile-mode", "off", "--total-steps", str(4 * 16 * 2000), "--checkpoint-every",
                         "0", "--log-every", "1")
    while "iter 2/" not in (line := proc.stdout.readline()):
        assert line, f"the run ended early: {proc.communicate()}"
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == code, (out, err)
    assert "Traceback" not in err, err
    assert f"stopped by {sig.name} after iteration" in err and f"--resume {run}" in err, err
    saved = read_checkpoint(run)
    assert 2 <= saved["iteration"] < 2000
    rows = (run / "metrics.jsonl").read_text().splitlines()
    assert json.loads(rows[-1])["iteration"] == saved["iteration"] - 1, "the checkpoint holds the last iteration"
    assert not (run / "summary.json").exists()

def test_time_budget_stops_with_a_checkpoint(tmp_path):
    cfg = TrainConfig(env="cartpole", num_envs=4, num_steps=16, seq_len=4, num_minibatches=2, update_epochs=1,
                      hidden_dim=8, total_steps=4 * 16 * 10_000, eval_episodes=2, progress=False, device="cpu",
                      compile_mode="off", run_dir=str(tmp_path / "run"), time_budget=1.0, checkpoint_every=0)
    summary = Trainer(cfg).train()
    assert summary["stopped"] == "time budget" and "eval_return_mean" not in summary
    saved = read_checkpoint(tmp_path / "run")
    assert saved["iteration"] * 64 == summary["global_step"] < cfg.total_steps
