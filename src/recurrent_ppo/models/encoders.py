"""Observation encoders, chosen from the observation space: observations `[..., *leaf shape]` in the env's own
dtypes -> features `[..., hidden_dim]`, every conversion (one-hot, /255, layout) on the device.

A single flat float Box is `Sequential(Linear(obs_dim, hidden), Tanh)`. Anything else is encoded leaf by leaf:
a float/integer Box flattened, Discrete and MultiDiscrete one-hot, MultiBinary (the action mask included) as
0/1 floats, a 3-D uint8 Box (an image) through a small CNN; the leaves' features are concatenated and mapped to
`hidden_dim` by Linear + Tanh.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from recurrent_ppo.models.heads import linear_layer
from recurrent_ppo.spaces import (
    Box,
    Discrete,
    Leaf,
    MultiBinary,
    MultiDiscrete,
    Obs,
    Space,
    channels_first,
    is_image,
    leaves,
)

NATURE_MIN_SIZE = 36
"""The smallest image side the Nature CNN's 8x8/4, 4x4/2, 3x3/1 convolutions leave a pixel of."""


def is_flat_box(space: Space) -> bool:
    return isinstance(space, Box) and len(space.shape) == 1 and space.dtype == "float32"


class Flatten(nn.Module):
    """A Box leaf, or a MultiBinary one (bool), as float features `[..., prod(shape)]`."""

    def __init__(self, space: Box | MultiBinary) -> None:
        super().__init__()
        self.leaf_dims = len(space.shape)
        self.out_dim = math.prod(space.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(-self.leaf_dims).float() if self.leaf_dims else x[..., None].float()


class OneHot(nn.Module):
    """Discrete / MultiDiscrete leaf (`[...]` or `[..., K]` int64) as concatenated one-hot features."""

    def __init__(self, space: Discrete | MultiDiscrete) -> None:
        super().__init__()
        if isinstance(space, Discrete):
            nvec, start, self.squeeze = (space.n,), (space.start,), True
        else:
            nvec, start, self.squeeze = space.nvec, space.start or (0,) * len(space.nvec), False
        # Component k's value v lands at column offsets[k] + v - start[k] of one [sum(nvec)] vector.
        offsets = [sum(nvec[:k]) - start[k] for k in range(len(nvec))]
        self.register_buffer("offsets", torch.tensor(offsets), persistent=False)
        self.out_dim = sum(nvec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        columns = (x[..., None] if self.squeeze else x) + self.offsets  # [..., K]
        features = torch.zeros(*x.shape[:x.dim() - (0 if self.squeeze else 1)], self.out_dim, device=x.device)
        return features.scatter_(-1, columns, 1.0)


class ImageCNN(nn.Module):
    """A uint8 image leaf, HWC or CHW, scaled by 1/255 on the device, through the Nature DQN CNN (or, for images
    under 36 pixels a side, two padded 3x3 convolutions), then Linear + ReLU to `out_dim` features."""

    def __init__(self, space: Box, out_dim: int) -> None:
        super().__init__()
        self.chw = channels_first(space)
        channels, height, width = space.shape if self.chw else (space.shape[2], *space.shape[:2])
        if min(height, width) >= NATURE_MIN_SIZE:
            convs = [nn.Conv2d(channels, 32, 8, stride=4), nn.ReLU(), nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
                     nn.Conv2d(64, 64, 3, stride=1), nn.ReLU()]
        else:
            convs = [nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU()]
        self.convs = nn.Sequential(*convs, nn.Flatten())
        with torch.no_grad():
            flat = self.convs(torch.zeros(1, channels, height, width)).shape[1]
        self.linear = nn.Sequential(nn.Linear(flat, out_dim), nn.ReLU())
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[:-3]
        images = x.reshape(-1, *x.shape[-3:]).float() / 255.0  # [B * L, *image]
        if not self.chw:
            images = images.permute(0, 3, 1, 2)  # HWC -> CHW
        return self.linear(self.convs(images)).reshape(*batch, self.out_dim)


def leaf_encoder(leaf: Leaf, hidden_dim: int) -> nn.Module:
    if is_image(leaf):
        return ImageCNN(leaf, hidden_dim)
    if isinstance(leaf, (Discrete, MultiDiscrete)):
        return OneHot(leaf)
    return Flatten(leaf)


class LeafEncoder(nn.Module):
    """One encoder per leaf of the observation, their features concatenated, then Linear + Tanh."""

    def __init__(self, space: Space, hidden_dim: int) -> None:
        super().__init__()
        self.paths = list(leaves(space))  # "" for a leaf space: the observation is a tensor, not a dict
        self.leaves = nn.ModuleList(leaf_encoder(leaf, hidden_dim) for leaf in leaves(space).values())
        self.project = nn.Sequential(linear_layer(sum(e.out_dim for e in self.leaves), hidden_dim, 2**0.5), nn.Tanh())

    def forward(self, obs: Obs) -> torch.Tensor:
        if self.paths == [""]:
            return self.project(self.leaves[0](obs))
        features = [encoder(obs[path]) for path, encoder in zip(self.paths, self.leaves)]
        return self.project(torch.cat(features, dim=-1))  # [..., hidden]


def make_encoder(space: Space, hidden_dim: int) -> nn.Module:
    """The encoder of observations of `space`, features `[..., hidden_dim]`."""
    if is_flat_box(space):  # the original Linear + Tanh, kept exactly (its init included): same speed and learning
        return nn.Sequential(linear_layer(space.shape[0], hidden_dim, 2**0.5), nn.Tanh())
    return LeafEncoder(space, hidden_dim)
