"""What a learned ConcentrationEasy policy does: `python concentration_diagnosis.py RUN_DIR [--memoryless]` plays
256 envs for 520 steps (5 episodes each) with the sampling policy of RUN_DIR/checkpoint.pt and prints
- its mean return;
- the probability it puts on cards that show (face up, or the card in play), at first and at second picks;
- at each second pick right after a failed pair X, Y (both seen one step earlier, both face down again), the
  probability on the one of X, Y whose colour matches the card in play, on the other one, and on the mean face-down
  card. A policy that remembers puts more on the matching one than on the other.
`--memoryless` loads a run of the memoryless probe (architecture_probe.py memoryless)."""
import sys

import torch
from torch import nn

import recurrent_ppo.models.policy as policy_module
from recurrent_ppo.checkpoint import load_policy
from recurrent_ppo.envs import make_env

torch.set_num_threads(1)
torch.manual_seed(0)
if "--memoryless" in sys.argv:
    class Memoryless(nn.Module):  # the probe's wrapper: the core runs, the heads see the encoder's features
        def __init__(self, core):
            super().__init__()
            self.inner, self.state_names = core, core.state_names

        def forward(self, x, episode_starts, state):
            return x, self.inner(x, episode_starts, state)[1]

    make_core = policy_module.make_core
    policy_module.make_core = lambda kind, i, h, n=1: Memoryless(make_core(kind, i, h, n))
policy = load_policy(sys.argv[1] + "/checkpoint.pt")
N, FACE_DOWN = 256, 2
env = make_env("popgym/ConcentrationEasy", N, "cpu", previous_action=True)
obs, hidden = env.reset(), tuple(h.clone() for h in policy.initial_hidden(N))
starts, previous = torch.ones(N, dtype=torch.bool), None
shown_mass, matching, other, face_down = [[], []], [], [], []
returns, running = [], torch.zeros(N)
with torch.no_grad():
    for _ in range(104 * 5):
        cards = obs["obs"]
        shown = cards != FACE_DOWN
        features, hidden = policy.features({k: v[:, None] for k, v in obs.items()}, hidden, starts[:, None])
        probs = torch.softmax(policy.head.linear(features[:, 0]), -1)
        second = shown.sum(1) % 2 == 1  # one card in play
        for pick, rows in enumerate((~second, second)):
            shown_mass[pick].append((probs * shown)[rows].sum(1))
        if previous is not None:
            gone = (previous != FACE_DOWN) & ~shown & ~starts[:, None]  # X and Y, face down again
            in_play = shown & (previous == FACE_DOWN)
            rows = second & (gone.sum(1) == 2) & (in_play.sum(1) == 1)
            colour = (cards * in_play).sum(1)
            match = gone & (previous == colour[:, None])
            rows &= match.sum(1) == 1
            matching.append((probs * match)[rows].sum(1))
            other.append((probs * (gone & ~match))[rows].sum(1))
            face_down.append(((probs * ~shown).sum(1) / (~shown).sum(1).clamp(min=1))[rows])
        result = env.step(torch.distributions.Categorical(probs).sample())
        running += result.reward
        done = result.terminated | result.truncated
        returns += running[done].tolist()
        running[done] = 0
        previous, obs, starts = cards, result.obs, done
print(f"{sys.argv[1].rstrip('/').split('/')[-1]}: mean return {sum(returns) / len(returns):.3f} ({len(returns)} "
      f"episodes); on shown cards: first pick {torch.cat(shown_mass[0]).mean():.4f}, second pick "
      f"{torch.cat(shown_mass[1]).mean():.4f}; after a failed pair: the matching card {torch.cat(matching).mean():.4f}, "
      f"the other {torch.cat(other).mean():.4f}, a face-down card on average {torch.cat(face_down).mean():.4f} "
      f"(n={len(torch.cat(matching))})")
