"""Scripted policies on popgym's own ConcentrationEasy, 1,000 episodes each: `python concentration_scripted.py`.
- memoryless: turn a random face-down card, except that a share `wasted` of the picks turns a card that shows;
- remember K: the same, but it keeps the colours of the last K cards it turned, and when the card in play has a
  remembered face-down match it turns that one (first picks go to cards it does not remember)."""
import numpy as np
from popgym.envs.concentration import ConcentrationEasy


def play(remember: int, wasted: float, episodes: int = 1000, seed: int = 0) -> tuple[float, float]:
    rng, env, returns = np.random.default_rng(seed), ConcentrationEasy(), []
    face_down = env.facedown_card
    for _ in range(episodes):
        obs, _ = env.reset(seed=int(rng.integers(1 << 30)))
        seen: dict[int, int] = {}  # place -> colour, the last `remember` cards turned, oldest first
        in_play, total, done = None, 0.0, False
        while not done:
            down, shown = np.flatnonzero(obs == face_down), np.flatnonzero(obs != face_down)
            action = None
            if in_play is not None:
                known = [p for p, colour in seen.items() if colour == obs[in_play] and p != in_play and p in down]
                action = known[-1] if known else None
            if action is None:
                if rng.random() < wasted and len(shown):
                    action = rng.choice(shown)
                else:
                    unknown = [p for p in down if p not in seen]
                    action = rng.choice(unknown if unknown else down)
            obs, reward, terminated, truncated, _ = env.step(int(action))
            total, done = total + reward, terminated or truncated
            if obs[action] != face_down and remember:
                seen.pop(int(action), None)
                seen[int(action)] = int(obs[action])
                while len(seen) > remember:
                    seen.pop(next(iter(seen)))
            in_play = int(action) if len(env.deck["in_play_idx"]) == 1 else None
        returns.append(total)
    return float(np.mean(returns)), float(np.std(returns) / np.sqrt(episodes))


for remember in (0, 2, 4):
    for wasted in (0.0, 0.005, 0.01, 0.02, 0.05):
        mean, error = play(remember, wasted)
        print(f"remember {remember}, wasted picks {wasted:.3f}: {mean:.3f} +- {error:.3f}", flush=True)
