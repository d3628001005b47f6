"""The examples run as documented (small sizes, a few iterations)."""

import importlib.util
import math
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_custom_loop_trains_without_the_trainer(capsys):
    for core in ("lstm", "gru"):
        mean_return = load("custom_loop").main(["--iterations", "2", "--num-envs", "8", "--num-steps", "16",
                                                "--seq-len", "8", "--core", core, "--device", "cpu"])
        assert math.isfinite(mean_return)
    assert "iteration 2/2: mean return" in capsys.readouterr().out
