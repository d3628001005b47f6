"""The side-by-side baseline: one PPO iteration written the way CleanRL's ppo_atari_lstm.py writes it.

Eager PyTorch; `nn.LSTM` called one step at a time, its state masked by `1 - done` before each step (CleanRL's
`get_states`); `Categorical` sampling; time-major `[num_steps, num_envs]` storage; the Python GAE loop; epochs x
minibatches of env subsets, each BPTT'd over the whole rollout with numpy-shuffled indices, and the `.item()`
calls CleanRL makes for logging. It runs on our device env (recurrent_ppo.envs) with our sizes and PPO settings
(one TrainConfig) and with our truncation semantics: a time-limit cut bootstraps from V(final observation),
computed with the state after the step, as the trainer does. So both sides do the same work per iteration;
the differences are the implementation choices being measured.

Two things are CleanRL's and not ours, on purpose: minibatches are whole-rollout sequences of
`num_envs / num_minibatches` envs (CleanRL has no seq_len; the transitions per minibatch are the same), and
there is no episode-return bookkeeping on the device (CleanRL reads it from gym's info dicts).

`nn.LSTM` is fine here (a baseline, never compiled), never in src/.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.distributions.categorical import Categorical

from recurrent_ppo.config import TrainConfig
from recurrent_ppo.envs import make_env


def cleanrl_gae(rewards: torch.Tensor, values: torch.Tensor, terminated: torch.Tensor, truncated: torch.Tensor,
                truncated_values: torch.Tensor, last_values: torch.Tensor, gamma: float, gae_lambda: float
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """CleanRL's GAE loop over time on `[num_envs, num_steps]` tensors, with our truncation semantics
    (docs/design.md): a truncated step bootstraps from `truncated_values`, and the recursion stops at any episode end.
    Returns `(advantages, returns)`, each `[num_envs, num_steps]`."""
    num_steps = rewards.shape[1]
    advantages = torch.zeros_like(rewards)
    lastgaelam = 0
    for t in reversed(range(num_steps)):
        if t == num_steps - 1:
            nextvalues = last_values
        else:
            nextvalues = values[:, t + 1]
        nextvalues = torch.where(truncated[:, t], truncated_values[:, t], nextvalues)
        nextnonterminal = 1.0 - terminated[:, t].to(rewards.dtype)  # CleanRL's dones share the rewards' dtype
        nextnonreset = 1.0 - (terminated[:, t] | truncated[:, t]).to(rewards.dtype)
        delta = rewards[:, t] + gamma * nextvalues * nextnonterminal - values[:, t]
        advantages[:, t] = lastgaelam = delta + gamma * gae_lambda * nextnonreset * lastgaelam
    returns = advantages + values
    return advantages, returns


def layer_init(layer: nn.Linear, std: float = np.sqrt(2), bias_const: float = 0.0) -> nn.Linear:
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


class Agent(nn.Module):
    """CleanRL's LSTM agent with our policy's shape: Linear+Tanh encoder -> LSTM -> actor and critic heads."""

    def __init__(self, obs_dim: int, num_actions: int, hidden_dim: int, num_layers: int = 1) -> None:
        super().__init__()
        self.network = nn.Sequential(layer_init(nn.Linear(obs_dim, hidden_dim)), nn.Tanh())
        self.lstm = nn.LSTM(hidden_dim, hidden_dim, num_layers)
        for name, param in self.lstm.named_parameters():
            if "bias" in name:
                nn.init.constant_(param, 0)
            elif "weight" in name:
                nn.init.orthogonal_(param, 1.0)
        self.actor = layer_init(nn.Linear(hidden_dim, num_actions), std=0.01)
        self.critic = layer_init(nn.Linear(hidden_dim, 1), std=1)

    def get_states(self, x, lstm_state, done):
        hidden = self.network(x)

        # LSTM logic
        batch_size = lstm_state[0].shape[1]
        hidden = hidden.reshape((-1, batch_size, self.lstm.input_size))
        done = done.reshape((-1, batch_size))
        new_hidden = []
        for h, d in zip(hidden, done):
            h, lstm_state = self.lstm(
                h.unsqueeze(0),
                (
                    (1.0 - d).view(1, -1, 1) * lstm_state[0],
                    (1.0 - d).view(1, -1, 1) * lstm_state[1],
                ),
            )
            new_hidden += [h]
        new_hidden = torch.flatten(torch.cat(new_hidden), 0, 1)
        return new_hidden, lstm_state

    def get_value(self, x, lstm_state, done):
        hidden, _ = self.get_states(x, lstm_state, done)
        return self.critic(hidden)

    def get_action_and_value(self, x, lstm_state, done, action=None):
        hidden, lstm_state = self.get_states(x, lstm_state, done)
        logits = self.actor(hidden)
        probs = Categorical(logits=logits)
        if action is None:
            action = probs.sample()
        return action, probs.log_prob(action), probs.entropy(), self.critic(hidden), lstm_state


class CleanRLPPO:
    """CleanRL's training loop body, one `train_iteration` at a time, on the env and sizes of `cfg`."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.cfg = cfg = cfg.validate()
        if cfg.num_envs % cfg.num_minibatches:
            raise ValueError(f"the CleanRL baseline splits envs into minibatches: num_minibatches="
                             f"{cfg.num_minibatches} must divide num_envs={cfg.num_envs}")
        self.device = device = cfg.resolved_device()
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        self.env = make_env(cfg.env, cfg.num_envs, device)
        (self.obs_dim,), num_actions = self.env.observation_space.shape, self.env.action_space.n  # a flat Box, Discrete
        self.agent = Agent(self.obs_dim, num_actions, cfg.hidden_dim, cfg.num_layers).to(device)
        self.optimizer = torch.optim.Adam(self.agent.parameters(), lr=cfg.learning_rate, eps=1e-5)

        # ALGO Logic: Storage setup
        t, n = cfg.num_steps, cfg.num_envs
        self.obs = torch.zeros((t, n, self.obs_dim)).to(device)
        self.actions = torch.zeros((t, n)).to(device)
        self.logprobs = torch.zeros((t, n)).to(device)
        self.rewards = torch.zeros((t, n)).to(device)
        self.dones = torch.zeros((t, n)).to(device)
        self.values = torch.zeros((t, n)).to(device)
        # Ours, for the truncation semantics both sides follow.
        self.terminations = torch.zeros((t, n), dtype=torch.bool).to(device)
        self.truncations = torch.zeros((t, n), dtype=torch.bool).to(device)
        self.truncated_values = torch.zeros((t, n)).to(device)

        self.next_obs = self.env.reset()
        self.next_done = torch.zeros(n).to(device)
        self.next_lstm_state = (
            torch.zeros(self.agent.lstm.num_layers, n, self.agent.lstm.hidden_size).to(device),
            torch.zeros(self.agent.lstm.num_layers, n, self.agent.lstm.hidden_size).to(device),
        )
        self.global_step = 0

    def train_iteration(self, iteration: int) -> dict[str, float]:
        """Rollout, GAE and the PPO update, as in CleanRL's `for iteration in ...` body; returns its log scalars."""
        cfg, agent, device = self.cfg, self.agent, self.device
        obs, actions, logprobs, rewards, dones, values = (self.obs, self.actions, self.logprobs, self.rewards,
                                                          self.dones, self.values)
        next_obs, next_done, next_lstm_state = self.next_obs, self.next_done, self.next_lstm_state
        initial_lstm_state = (next_lstm_state[0].clone(), next_lstm_state[1].clone())
        if cfg.anneal_lr:
            frac = 1.0 - iteration / (cfg.total_steps // cfg.batch_size)
            self.optimizer.param_groups[0]["lr"] = frac * cfg.learning_rate
        no_done = torch.zeros(cfg.num_envs, device=device)

        for step in range(0, cfg.num_steps):
            self.global_step += cfg.num_envs
            obs[step] = next_obs
            dones[step] = next_done

            # ALGO LOGIC: action logic
            with torch.no_grad():
                action, logprob, _, value, next_lstm_state = agent.get_action_and_value(
                    next_obs, next_lstm_state, next_done)
                values[step] = value.flatten()
            actions[step] = action
            logprobs[step] = logprob

            result = self.env.step(action)
            with torch.no_grad():  # our truncation bootstrap: V(final obs) from the state after this step
                self.truncated_values[step] = agent.get_value(result.final_obs, next_lstm_state, no_done).flatten()
            rewards[step] = result.reward * cfg.reward_scale
            self.terminations[step] = result.terminated
            self.truncations[step] = result.truncated
            next_obs = result.obs
            next_done = (result.terminated | result.truncated).float()

        # bootstrap value if not done
        with torch.no_grad():
            next_value = agent.get_value(next_obs, next_lstm_state, next_done).reshape(-1)
            # Time-major storage read through [num_envs, num_steps] views, so the loop walks contiguous rows.
            advantages, returns = cleanrl_gae(rewards.T, values.T, self.terminations.T, self.truncations.T,
                                              self.truncated_values.T, next_value, cfg.gamma, cfg.gae_lambda)
            advantages, returns = advantages.T, returns.T
        self.next_obs, self.next_done, self.next_lstm_state = next_obs, next_done, next_lstm_state

        # flatten the batch
        b_obs = obs.reshape((-1, self.obs_dim))
        b_logprobs = logprobs.reshape(-1)
        b_actions = actions.reshape(-1)
        b_dones = dones.reshape(-1)
        b_advantages = advantages.reshape(-1)
        b_returns = returns.reshape(-1)
        b_values = values.reshape(-1)

        # Optimizing the policy and value network
        envsperbatch = cfg.num_envs // cfg.num_minibatches
        envinds = np.arange(cfg.num_envs)
        flatinds = np.arange(cfg.batch_size).reshape(cfg.num_steps, cfg.num_envs)
        clipfracs = []
        for _ in range(cfg.update_epochs):
            np.random.shuffle(envinds)
            for start in range(0, cfg.num_envs, envsperbatch):
                end = start + envsperbatch
                mbenvinds = envinds[start:end]
                mb_inds = flatinds[:, mbenvinds].ravel()  # be really careful about the index

                _, newlogprob, entropy, newvalue, _ = agent.get_action_and_value(
                    b_obs[mb_inds],
                    (initial_lstm_state[0][:, mbenvinds], initial_lstm_state[1][:, mbenvinds]),
                    b_dones[mb_inds],
                    b_actions.long()[mb_inds],
                )
                logratio = newlogprob - b_logprobs[mb_inds]
                ratio = logratio.exp()

                with torch.no_grad():
                    old_approx_kl = (-logratio).mean()
                    approx_kl = ((ratio - 1) - logratio).mean()
                    clipfracs += [((ratio - 1.0).abs() > cfg.clip_coef).float().mean().item()]

                mb_advantages = b_advantages[mb_inds]
                if cfg.norm_adv:
                    mb_advantages = (mb_advantages - mb_advantages.mean()) / (mb_advantages.std() + 1e-8)

                # Policy loss
                pg_loss1 = -mb_advantages * ratio
                pg_loss2 = -mb_advantages * torch.clamp(ratio, 1 - cfg.clip_coef, 1 + cfg.clip_coef)
                pg_loss = torch.max(pg_loss1, pg_loss2).mean()

                # Value loss
                newvalue = newvalue.view(-1)
                if cfg.clip_vloss:
                    v_loss_unclipped = (newvalue - b_returns[mb_inds]) ** 2
                    v_clipped = b_values[mb_inds] + torch.clamp(
                        newvalue - b_values[mb_inds],
                        -cfg.clip_coef,
                        cfg.clip_coef,
                    )
                    v_loss_clipped = (v_clipped - b_returns[mb_inds]) ** 2
                    v_loss_max = torch.max(v_loss_unclipped, v_loss_clipped)
                    v_loss = 0.5 * v_loss_max.mean()
                else:
                    v_loss = 0.5 * ((newvalue - b_returns[mb_inds]) ** 2).mean()

                entropy_loss = entropy.mean()
                loss = pg_loss - cfg.ent_coef * entropy_loss + v_loss * cfg.vf_coef

                self.optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), cfg.max_grad_norm)
                self.optimizer.step()

        y_pred, y_true = b_values.cpu().numpy(), b_returns.cpu().numpy()
        var_y = np.var(y_true)
        explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y
        # What CleanRL hands its SummaryWriter each iteration.
        return {"learning_rate": self.optimizer.param_groups[0]["lr"], "value_loss": v_loss.item(),
                "policy_loss": pg_loss.item(), "entropy": entropy_loss.item(), "old_approx_kl": old_approx_kl.item(),
                "approx_kl": approx_kl.item(), "clip_fraction": float(np.mean(clipfracs)),
                "explained_variance": float(explained_var)}
