"""The wide probe: `python wide_probe.py TASK SEED STEPS [JSON]` runs preset_run.py with a wide path added (its
records were named WIDE-... in preset_runs.jsonl): the encoder's leaf features (the one-hot and flattened
observation, before its Linear + Tanh) straight to the action logits and to the value, through a Linear each that
starts at zero, added to what the heads compute from the core's output."""
import runpy
from pathlib import Path

import torch
from torch import nn

import recurrent_ppo.models.encoders as encoders
import recurrent_ppo.models.policy as policy_module

RAW = {}  # the leaf features of the observation the encoder saw last: the heads read them in the same call


def encode(self, obs):
    if self.paths == [""]:
        raw = self.leaves[0](obs)
    else:
        raw = torch.cat([encoder(obs[path]) for path, encoder in zip(self.paths, self.leaves)], dim=-1)
    RAW["features"] = raw
    return self.project(raw)


class Wide(nn.Module):
    def __init__(self, inner: nn.Linear, raw_dim: int) -> None:
        super().__init__()
        self.inner, self.weight, self.out_features = inner, inner.weight, inner.out_features
        self.wide = nn.Linear(raw_dim, inner.out_features)
        nn.init.zeros_(self.wide.weight)
        nn.init.zeros_(self.wide.bias)

    def forward(self, features):
        raw = RAW["features"]
        if raw.dim() == features.dim() + 1:  # one rollout step: the encoder saw [N, 1, ...]
            raw = raw[:, 0]
        return self.inner(features) + self.wide(raw)


policy_init = policy_module.RecurrentPolicy.__init__


def init(self, *args, **kwargs):
    policy_init(self, *args, **kwargs)
    raw_dim = self.encoder.project[0].in_features
    self.head.linear = Wide(self.head.linear, raw_dim)
    self.critic = Wide(self.critic, raw_dim)


encoders.LeafEncoder.forward = encode
policy_module.RecurrentPolicy.__init__ = init
runpy.run_path(str(Path(__file__).with_name("preset_run.py")), run_name="__main__")
