"""The run's console: a bar on a terminal, plain lines every --log-every iterations elsewhere (a log file)."""

import io

import pytest

from recurrent_ppo.console import Console, progress_line
from tests.helpers import train_process

RECORD = {"global_step": 4096, "sps": 18_400.2, "episode_return_mean": 23.1, "policy_loss": -0.01,
          "value_loss": 0.5, "entropy": 0.69, "approx_kl": 0.002, "sps_overall": 17_000.0}

def test_plain_lines_every_n_iterations_first_and_last_included():
    stream = io.StringIO()
    with Console(25, 4096, every=10, stream=stream) as console:
        assert not console.interactive, "a StringIO is not a terminal"
        for iteration in range(25):
            console.update(iteration, {**RECORD, "global_step": 4096 * (iteration + 1)})
        console.say("compiled in 12.3 s")
    lines = stream.getvalue().splitlines()
    assert [line.split()[1] for line in lines[:-1]] == ["1/25", "10/25", "20/25", "25/25"]
    assert lines[-1] == "compiled in 12.3 s"
    assert lines[1] == progress_line({**RECORD, "global_step": 40960}, 10, 25)
    assert lines[1] == ("iter 10/25  steps 40,960  sps 18,400  return 23.10  pg_loss -0.0100  v_loss 0.5000  "
                        "entropy 0.690  kl 0.0020")

def test_disabled_console_prints_nothing():
    stream = io.StringIO()
    with Console(3, 10, enabled=False, stream=stream) as console:
        console.update(0, RECORD)
        console.say("hello")
    assert stream.getvalue() == ""

@pytest.mark.slow(seconds=5)
def test_the_console_prints_lines_to_a_log_file(tmp_path):
    proc = train_process(tmp_path / "run", "--compile-mode", "default", "--compile-backend", "eager",
                         "--total-steps", str(4 * 16 * 3), "--log-every", "2")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert any(line.startswith("compiling the rollout step and the update") for line in lines), out
    assert any(line.startswith("first iteration, compilation included: ") for line in lines), out
    progress = [line for line in lines if line.startswith("iter ")]
    assert [line.split()[1] for line in progress] == ["1/3", "2/3", "3/3"], out
    assert all("steps " in line and "sps " in line and "kl " in line for line in progress)
