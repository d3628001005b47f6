"""One PPO minibatch step: BPTT forward over the sequences + loss, backward, gradient clip, optimizer step."""

from __future__ import annotations

import pytest

import benchlib
from recurrent_ppo.trainer import Trainer

pytestmark = pytest.mark.benchmark(group="ppo_step")


def test_ppo_step(benchmark, profile, compile_mode, tmp_path):
    compiled = compile_mode != benchlib.EAGER
    benchlib.fresh_state()
    cfg = profile.train.replace(run_dir=str(tmp_path))
    # A real minibatch: one rollout, its advantages, the first batch of the update's sequences. An eager trainer
    # collects it, so the compiled one below compiles its update only.
    source = Trainer(cfg.replace(compile_mode=benchlib.EAGER))
    last_values = source.collector.collect()
    source.buffer.compute_advantages(last_values, cfg.gamma, cfg.gae_lambda)
    batch = next(source.buffer.get_batched_sequences(cfg.seq_len, cfg.num_minibatches))
    batch_size, seq_len = batch.actions.shape
    trainer = Trainer(cfg.replace(compile_mode=compile_mode))

    benchmark.extra_info.update(compile_mode=compile_mode, sequences=batch_size, seq_len=seq_len,
                                hidden_dim=cfg.hidden_dim)
    benchlib.measure(benchmark, lambda: trainer.updater.step(batch), device=trainer.device, profile=profile,
                     warmup=3 if compiled else 1, compiled=compiled, items=batch_size * seq_len)
