"""Train a recurrent policy from your own loop: the library's policy, buffer and PPO loss, no Trainer.

    python examples/custom_loop.py --iterations 60

The env is MaskedChoice, a device env with multi-part (MultiDiscrete) actions, a fresh action mask in every
observation and a cue to remember until a query; every step of the loop below runs on the device. The parts:

    RecurrentPolicy(obs_space, action_space, ...)   encoder -> LSTM/GRU -> head, chosen from the env's spaces
    RolloutBuffer.for_policy(policy, ...)           static storage, each observation leaf in its own dtype
    compile_fn(policy.get_action, mode)             compiled where the parts are put together (or not: "off")
    ppo_loss(policy.evaluate_actions(...), batch)   the update, BPTT over whole stored sequences
"""

from __future__ import annotations

import argparse

import torch

from recurrent_ppo import RecurrentPolicy, RolloutBuffer, ppo_loss, reset_state
from recurrent_ppo.compile import compile_fn
from recurrent_ppo.envs.masked_choice import MaskedChoice


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--num-envs", type=int, default=32)
    parser.add_argument("--num-steps", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=16, help="BPTT length; must divide --num-steps")
    parser.add_argument("--core", default="lstm", choices=["lstm", "gru"])
    parser.add_argument("--compile-mode", default="off", help="off, default, reduce-overhead (CUDA graphs)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=1)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> float:
    """Train; returns the mean return of the episodes finished in the last iteration."""
    args = parse(argv)
    torch.manual_seed(args.seed)
    device, n = torch.device(args.device), args.num_envs
    env = MaskedChoice(n, device)
    policy = RecurrentPolicy(env.observation_space, env.action_space, hidden_dim=64, core=args.core).to(device)
    optimizer = torch.optim.Adam(policy.parameters(), lr=2.5e-3, eps=1e-5)
    buffer = RolloutBuffer.for_policy(policy, n, args.num_steps, device)
    # Without CUDA graphs a compiled step's outputs can be fed straight back in (the Trainer's collector copies
    # them into carry tensors instead, which reduce-overhead needs).
    get_action = compile_fn(policy.get_action, args.compile_mode)
    get_value = compile_fn(policy.get_value, args.compile_mode)
    evaluate_actions = compile_fn(policy.evaluate_actions, args.compile_mode)

    with torch.inference_mode():  # the rollout needs no autograd; the buffer copies values into normal tensors
        obs = env.reset()  # {"obs": [N, D] float, "action_mask": [N, sum(nvec)] bool}
        hidden = policy.initial_hidden(n)  # (h, c) or (h,), each [layers, N, H]
        starts = torch.ones(n, dtype=torch.bool, device=device)
        running = torch.zeros(n, device=device)
    mean_return = float("nan")
    for iteration in range(args.iterations):
        buffer.reset()
        finished_sum = torch.zeros((), device=device)
        finished_count = torch.zeros((), device=device)
        with torch.inference_mode():
            for _ in range(args.num_steps):
                hidden = reset_state(hidden, starts)  # the buffer stores the state fed into the step
                act = get_action(obs, hidden, starts)
                result = env.step(policy.env_action(act.action))
                done = result.terminated | result.truncated
                buffer.add(obs=obs, actions=act.action, log_probs=act.log_prob, values=act.value,
                           rewards=result.reward, terminated=result.terminated, truncated=result.truncated,
                           episode_starts=starts, hidden=hidden, final_obs=result.final_obs)
                running += result.reward
                finished_sum += (running * done).sum()
                finished_count += done.sum()
                running *= ~done
                obs, hidden, starts = result.obs, act.hidden, done
            last_values = get_value(obs, hidden, starts)
            buffer.bootstrap_truncations(policy.value_after_step)  # V(final obs) of episodes cut by a time limit
        buffer.compute_advantages(last_values, gamma=0.99, gae_lambda=0.95)
        for _epoch in range(4):
            for batch in buffer.get_batched_sequences(args.seq_len, num_minibatches=4):
                out = evaluate_actions(batch.obs, batch.hidden, batch.episode_starts, batch.actions)
                loss = ppo_loss(out, batch, clip_coef=0.2, vf_coef=0.5, ent_coef=0.01).loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(policy.parameters(), 0.5)
                optimizer.step()
        mean_return = float(finished_sum / finished_count.clamp(min=1))  # one host read per iteration
        print(f"iteration {iteration + 1}/{args.iterations}: mean return {mean_return:.3f} "
              f"(memoryless best {env.memoryless_return():.3f}, perfect memory 1.0)")
    return mean_return


if __name__ == "__main__":
    main()
