"""Observation and action specs: what an env produces and accepts, independent of gymnasium.

Device envs declare these directly; the gymnasium adapter converts gymnasium spaces into them (`from_gym`).
An observation space is a leaf (Box, Discrete, MultiDiscrete, MultiBinary) or a Dict/Tuple of them, nested.
Observations travel as a tensor `[N, *shape]` for a leaf space, and as a flat dict `{path: tensor}` for a
Dict/Tuple space, keyed by each leaf's path (`"a"`, `"a/b"`, `"0"`, `"1/pos"`; see `leaves`). An `"action_mask"`
key at the top of a Dict observation space is the action mask (gymnasium's convention): a MultiBinary of the
action head's `mask_dim`, true where an action is legal.
An action space is Discrete, MultiDiscrete or Box.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Union

import torch

ACTION_MASK = "action_mask"
"""The key of the action mask in a Dict observation space."""


@dataclass(frozen=True)
class Box:
    """Real (or integer-valued) arrays of `shape`; bounds per element (flattened, C order) or one for all.

    A 3-D `uint8` Box is an image (HWC or CHW)."""

    shape: tuple[int, ...]
    low: float | tuple[float, ...] = -math.inf
    high: float | tuple[float, ...] = math.inf
    dtype: str = "float32"
    """A torch dtype name: float32, float64, uint8, int64, ..."""

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)


@dataclass(frozen=True)
class Discrete:
    """One integer in `[start, start + n)`, stored as int64 `[N]`."""

    n: int
    start: int = 0


@dataclass(frozen=True)
class MultiDiscrete:
    """Integers `x[i]` in `[start[i], start[i] + nvec[i])`, stored as int64 `[N, len(nvec)]`."""

    nvec: tuple[int, ...]
    start: tuple[int, ...] | None = None  # None: all zeros


@dataclass(frozen=True)
class MultiBinary:
    """0/1 values of `shape`, stored as bool `[N, *shape]`."""

    shape: tuple[int, ...]


@dataclass(frozen=True)
class Dict:
    """Named subspaces, in order."""

    spaces: tuple[tuple[str, Space], ...]


@dataclass(frozen=True)
class Tuple:
    """Positional subspaces."""

    spaces: tuple[Space, ...]


Leaf = Union[Box, Discrete, MultiDiscrete, MultiBinary]
Space = Union[Box, Discrete, MultiDiscrete, MultiBinary, Dict, Tuple]
ActionSpace = Union[Discrete, MultiDiscrete, Box]

Obs = Union[torch.Tensor, dict[str, torch.Tensor]]
"""An observation pytree: one tensor for a leaf space, a flat `{path: tensor}` dict for a Dict/Tuple space."""

LEAF_SPACES = "Box, Discrete, MultiDiscrete, MultiBinary"
OBSERVATION_SPACES = f"{LEAF_SPACES}, and Dict/Tuple of them"
ACTION_SPACES = "Discrete, MultiDiscrete (one-dimensional nvec) or a Box with finite bounds"


def leaves(space: Space, path: str = "") -> dict[str, Leaf]:
    """Every leaf of `space` by its path: `""` for a leaf space itself, `"a"`, `"a/b"`, `"0"`, `"1/pos"` inside
    a Dict/Tuple, in the order the subspaces are declared."""
    if isinstance(space, Dict):
        items = space.spaces
    elif isinstance(space, Tuple):
        items = tuple((str(i), sub) for i, sub in enumerate(space.spaces))
    else:
        return {path: space}
    found: dict[str, Leaf] = {}
    for key, sub in items:
        found.update(leaves(sub, f"{path}/{key}" if path else key))
    return found


def is_image(leaf: Leaf) -> bool:
    """A 3-D uint8 Box: an image, HWC or CHW (see `channels_first`)."""
    return isinstance(leaf, Box) and leaf.dtype == "uint8" and len(leaf.shape) == 3


def channels_first(image: Box) -> bool:
    """CHW when the first dimension is the smallest (stable-baselines3's rule), else HWC."""
    return min(range(3), key=lambda i: image.shape[i]) == 0


def storage(leaf: Leaf) -> tuple[tuple[int, ...], torch.dtype]:
    """Per-env shape and dtype of an observation leaf, as envs produce it and the rollout buffer stores it."""
    if isinstance(leaf, Box):
        return tuple(leaf.shape), leaf.torch_dtype
    if isinstance(leaf, Discrete):
        return (), torch.int64
    if isinstance(leaf, MultiDiscrete):
        return (len(leaf.nvec),), torch.int64
    return tuple(leaf.shape), torch.bool


def action_storage(space: ActionSpace) -> tuple[tuple[int, ...], torch.dtype]:
    """Per-env shape and dtype of a sampled action: `()` int64 (Discrete), `(K,)` int64 (MultiDiscrete),
    `(prod(shape),)` float32 (Box, flattened)."""
    if isinstance(space, Discrete):
        return (), torch.int64
    if isinstance(space, MultiDiscrete):
        return (len(space.nvec),), torch.int64
    return (math.prod(space.shape),), torch.float32


def mask_dim(space: ActionSpace) -> int | None:
    """Width of an action mask for `space` (one flag per action, sub-actions concatenated); None for a Box."""
    if isinstance(space, Discrete):
        return space.n
    if isinstance(space, MultiDiscrete):
        return sum(space.nvec)
    return None


def with_action_mask(space: Space, action_space: ActionSpace) -> Dict:
    """`space` with an `"action_mask"` leaf for `action_space` added at its top (a non-Dict space goes under
    `"obs"`)."""
    width = mask_dim(action_space)
    if width is None:
        raise ValueError(f"an action mask needs a Discrete or MultiDiscrete action space, got {action_space}")
    items = space.spaces if isinstance(space, Dict) else (("obs", space),)
    return Dict((*items, (ACTION_MASK, MultiBinary((width,)))))


def map_obs(fn, obs: Obs) -> Obs:
    """`fn` applied to every tensor of an observation pytree."""
    return {path: fn(x) for path, x in obs.items()} if isinstance(obs, dict) else fn(obs)


def obs_tensors(obs: Obs) -> tuple[torch.Tensor, ...]:
    """The tensors of an observation pytree, in path order."""
    return tuple(obs.values()) if isinstance(obs, dict) else (obs,)


def zeros(space: Space, batch: tuple[int, ...], device: torch.device | str) -> Obs:
    """An all-zero observation pytree of `space` with leading dims `batch`."""
    tensors = {path: torch.zeros((*batch, *shape), dtype=dtype, device=device)
               for path, (shape, dtype) in ((p, storage(leaf)) for p, leaf in leaves(space).items())}
    return tensors[""] if "" in tensors else tensors


def check_obs(space: Space, obs: Obs, where: str) -> None:
    """Raise ValueError naming `where`, the leaf and both shapes/dtypes unless `obs` (`[N, ...]` per leaf) is an
    observation of `space`."""
    expected = leaves(space)
    got = obs if isinstance(obs, dict) else {"": obs}
    if set(got) != set(expected):
        raise ValueError(f"{where}: observation keys {sorted(got)} do not match the space's leaves {sorted(expected)}")
    for path, leaf in expected.items():
        shape, dtype = storage(leaf)
        x = got[path]
        if not isinstance(x, torch.Tensor) or tuple(x.shape[1:]) != shape or x.dtype != dtype:
            found = f"shape {tuple(x.shape[1:])}, dtype {x.dtype}" if isinstance(x, torch.Tensor) else type(x)
            raise ValueError(f"{where}: observation {path or '(root)'!r} has per-env {found}; its space {leaf} "
                             f"needs shape {shape}, dtype {dtype}")


# --- plain data (checkpoints) -------------------------------------------------------------------------------

_TYPES = {cls.__name__: cls for cls in (Box, Discrete, MultiDiscrete, MultiBinary, Dict, Tuple)}


def to_data(space: Space) -> dict:
    """`space` as dicts, lists, strings and numbers, which `torch.load(weights_only=True)` reads back."""
    if isinstance(space, Dict):
        return {"type": "Dict", "spaces": [[key, to_data(sub)] for key, sub in space.spaces]}
    if isinstance(space, Tuple):
        return {"type": "Tuple", "spaces": [to_data(sub) for sub in space.spaces]}
    return {"type": type(space).__name__,
            **{key: list(v) if isinstance(v, tuple) else v for key, v in vars(space).items()}}


def from_data(data: dict) -> Space:
    """The space `to_data` wrote."""
    kind = _TYPES[data["type"]]
    if kind is Dict:
        return Dict(tuple((key, from_data(sub)) for key, sub in data["spaces"]))
    if kind is Tuple:
        return Tuple(tuple(from_data(sub) for sub in data["spaces"]))
    return kind(**{key: tuple(v) if isinstance(v, list) else v for key, v in data.items() if key != "type"})


# --- gymnasium ----------------------------------------------------------------------------------------------

def _unsupported(space: object, path: str, supported: str, role: str = "observation") -> ValueError:
    where = f" at {path!r} of the {role} space" if path else f" as the {role} space"
    described = " ".join(str(space).split())  # numpy reprs span lines
    return ValueError(f"unsupported space {described}{where}: {role}s may be {supported}")


def _bounds(values) -> float | tuple[float, ...]:
    import numpy as np

    flat = np.asarray(values, dtype=np.float64).reshape(-1)
    return float(flat[0]) if flat.size and (flat == flat[0]).all() else tuple(float(v) for v in flat)


def from_gym(space, path: str = "") -> Space:
    """The spec of a gymnasium observation space; `path` locates `space` inside an outer one (for messages).

    Box dtypes: uint8 stays uint8 (a 3-D one is an image), other integers and bools become int64, floats
    float32. Anything else (Text, Graph, Sequence, OneOf, ...) raises one ValueError naming it and its path.
    """
    import numpy as np
    from gymnasium import spaces as gs

    if isinstance(space, gs.Box):
        kind = np.dtype(space.dtype)
        dtype = "uint8" if kind == np.uint8 else "float32" if kind.kind == "f" else "int64"
        return Box(tuple(space.shape), _bounds(space.low), _bounds(space.high), dtype)
    if isinstance(space, gs.Discrete):
        return Discrete(int(space.n), int(space.start))
    if isinstance(space, gs.MultiDiscrete) and space.nvec.ndim == 1:
        start = tuple(int(s) for s in space.start)
        return MultiDiscrete(tuple(int(n) for n in space.nvec), start if any(start) else None)
    if isinstance(space, gs.MultiBinary):
        return MultiBinary(tuple(int(n) for n in np.atleast_1d(space.n)))
    if isinstance(space, gs.Dict):
        for key in space.spaces:
            if not isinstance(key, str) or "/" in key or not key:
                raise _unsupported(f"Dict key {key!r}", path, "Dicts with non-empty string keys without '/'")
        return Dict(tuple((key, from_gym(sub, f"{path}/{key}" if path else key)) for key, sub in space.spaces.items()))
    if isinstance(space, gs.Tuple):
        return Tuple(tuple(from_gym(sub, f"{path}/{i}" if path else str(i)) for i, sub in enumerate(space.spaces)))
    raise _unsupported(space, path, OBSERVATION_SPACES)


def action_from_gym(space) -> ActionSpace:
    """The spec of a gymnasium action space: Discrete, 1-D MultiDiscrete, or a Box with finite bounds."""
    from gymnasium import spaces as gs

    if isinstance(space, (gs.Discrete, gs.MultiDiscrete, gs.Box)):
        try:
            spec = from_gym(space)
        except ValueError:
            raise _unsupported(space, "", ACTION_SPACES, "action") from None
        return check_action_space(spec)
    raise _unsupported(space, "", ACTION_SPACES, "action")


def check_action_space(space: object) -> ActionSpace:
    """Raise ValueError unless `space` is an action space the heads support; returns it."""
    if isinstance(space, Box):
        bounds = [space.low, space.high]
        values = [v for b in bounds for v in (b if isinstance(b, tuple) else (b,))]
        if not all(math.isfinite(v) for v in values) or not space.dtype.startswith("float"):
            raise _unsupported(space, "", ACTION_SPACES, "action")
        return space
    if isinstance(space, Discrete) and space.n >= 2:
        return space
    if isinstance(space, MultiDiscrete) and space.nvec and min(space.nvec) >= 2:
        return space
    raise _unsupported(space, "", ACTION_SPACES + " (at least 2 choices each)", "action")
