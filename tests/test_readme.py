"""The README's Python snippets run as written: the library's own loop, and the trained agent in a gymnasium loop."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def block_with(text: str) -> str:
    found = [block for block in BLOCKS if text in block]
    assert len(found) == 1, f"the README holds one Python snippet with {text!r}"
    return found[0]


def run(block: str) -> dict:
    namespace = {"__name__": "readme"}
    exec(compile(block, str(README), "exec"), namespace)
    return namespace


def test_every_snippet_is_run_by_a_test():
    tested = {block_with("PPOUpdater"), block_with("load_agent")}
    assert set(BLOCKS) == tested, "a new snippet needs a test here"


def test_the_library_snippet_runs(capsys):
    run(block_with("PPOUpdater"))
    printed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in printed] == ["0", "1", "2"], printed


def test_the_agent_snippet_runs(tmp_path, monkeypatch):
    from recurrent_ppo.config import TrainConfig
    from recurrent_ppo.trainer import Trainer

    monkeypatch.chdir(tmp_path)  # the snippet's run folder, runs/taxi, trained tiny here
    Trainer(TrainConfig(env="gym:Taxi-v4", num_envs=4, num_steps=16, seq_len=8, total_steps=128, hidden_dim=16,
                        num_minibatches=2, update_epochs=1, eval_episodes=0, progress=False, device="cpu",
                        compile_mode="off", run_dir="runs/taxi")).train()
    namespace = run(block_with("load_agent"))
    assert namespace["done"], "the episode ran to its end"
    assert namespace["env"].action_space.contains(namespace["action"])

