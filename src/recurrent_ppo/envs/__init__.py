"""Vectorized environments by name: the GPU-native ones in `ENVS`, any gymnasium env as `gym:<id>` (or made by a
function of one's own, `gym:<module>:<function>`), and VectorEnvs of one's own by import path, `<module>:<attr>`."""

from __future__ import annotations

from collections.abc import Callable

import torch

from recurrent_ppo.envs.base import EnvFactory, StepResult, VectorEnv, check_vector_env
from recurrent_ppo.envs.cartpole import CartPole
from recurrent_ppo.envs.gym_adapter import PREFIX as GYM_PREFIX
from recurrent_ppo.envs.gym_adapter import GymVectorEnv
from recurrent_ppo.envs.masked_choice import MaskedChoice
from recurrent_ppo.envs.memory import CueMemory
from recurrent_ppo.envs.pendulum import Pendulum
from recurrent_ppo.envs.popgym import POPGYM_ENVS
from recurrent_ppo.envs.previous_action import PreviousAction
from recurrent_ppo.envs.sources import (
    FACTORY, GYM_FACTORY, attribute, call_factory, check_call, import_module, is_factory, is_import_path,
    is_object_marker, object_marker_error, rebuild_name, resolve)

ENVS: dict[str, Callable[[int, torch.device], VectorEnv]] = {
    "cartpole": lambda num_envs, device: CartPole(num_envs, device),
    "stateless-cartpole": lambda num_envs, device: CartPole(num_envs, device, stateless=True),
    "memory": lambda num_envs, device: CueMemory(num_envs, device),
    "stateless-pendulum": lambda num_envs, device: Pendulum(num_envs, device, stateless=True),
    "masked-choice": lambda num_envs, device: MaskedChoice(num_envs, device),
}
ENVS.update(POPGYM_ENVS)  # popgym/<Task><Level>


ENV_CHOICES = (f"one of {sorted(name for name in ENVS if name not in POPGYM_ENVS)}, popgym/<Task><Easy|Medium|Hard> "
               f"(e.g. popgym/RepeatPreviousEasy), gym:<id> for a gymnasium env (e.g. gym:CartPole-v1; "
               f"gym:<module>:<id> imports the module that registers it), gym:<module>:<function> for a function "
               f"returning a gymnasium env (wrappers and all), or <module>:<attr> for a VectorEnv class or factory "
               f"(num_envs, device) of your own (docs/envs.md)")


def is_env_name(name: str) -> bool:
    """Whether `name` has the form of an env: one of `ENVS`, `gym:<id>`, `gym:<module>:<attr>`, `<module>:<attr>`,
    or the marker of an env handed to the Trainer as an object (which `make_env` refuses, asking for it again).
    Nothing is imported: whether the module and attribute exist shows when the env is made."""
    if name in ENVS or is_import_path(name) or is_object_marker(name):
        return True
    return name.startswith(GYM_PREFIX) and len(name) > len(GYM_PREFIX)


def make_env(name: str, num_envs: int, device: torch.device | str, *, previous_action: bool = False,
             workers: int | str = 0, parts: int = 1) -> VectorEnv:
    """Build the vectorized env `name` with `num_envs` copies on `device`:
    - one of `ENVS`;
    - `gym:<id>` for the gymnasium env `<id>` (`gym:<module>:<id>` imports `<module>` first, which registers it);
      `gym:<module>:<function>`, where the module has a function of that name, makes each copy with
      `<function>()`, a gymnasium env with the wrappers it needs. Seeded from torch's global generator (so
      `torch.manual_seed` fixes its episodes too);
    - `<module>:<attr>` for a VectorEnv class, or a factory, called as `attr(num_envs, device)`; the module is
      imported from sys.path (the command line puts the current directory first).
    `previous_action` adds the previous action and a first-step flag to its observation (`PreviousAction`).
    `workers` and `parts` lay a gymnasium env's copies out in worker processes (`GymVectorEnv`); other envs take
    0 or "auto" (and ignore it)."""
    if is_object_marker(name):
        raise object_marker_error(name)
    if not is_env_name(name):
        raise ValueError(f"unknown env {name!r}; choose {ENV_CHOICES}")
    if workers not in (0, "auto") and not name.startswith(GYM_PREFIX):
        raise ValueError(f"env {name!r} is not a gymnasium env (gym:<id>), whose copies workers step; give it "
                         f"workers=0")
    device = torch.device(device)
    if name in ENVS:
        env = ENVS[name](num_envs, device)
    elif name.startswith(GYM_PREFIX):
        seed = int(torch.randint(0, 2**31 - num_envs, ()))
        env = GymVectorEnv(gym_source(name), num_envs, device, seed=seed, workers=workers, parts=parts, name=name)
    else:
        factory = resolve(name, name, FACTORY)
        if not is_factory(factory):  # one object cannot be both the training env and the evaluation env
            raise ValueError(f"env {name!r} names a {type(factory).__name__} instance, not {FACTORY}; name its class "
                             f"or a function that builds one")
        return build_env(factory, num_envs, device, previous_action=previous_action, source=f"env {name!r}")
    return PreviousAction(env) if previous_action else env


def gym_source(name: str) -> str | Callable[[], object]:
    """What `gym:<rest>` makes its copies from: `<rest>` as a gymnasium id, or, for `gym:<module>:<attr>` where the
    module has a callable `attr`, that function."""
    rest = name[len(GYM_PREFIX):]
    module_name, _, attr = rest.rpartition(":")
    if not module_name:
        return rest
    factory = attribute(import_module(module_name, name), attr)
    if not callable(factory):  # an id that importing the module registered
        return rest
    check_call(factory, (), f"env {name!r}", GYM_FACTORY)
    return factory


def build_env(env: VectorEnv | EnvFactory, num_envs: int, device: torch.device | str, *,
              previous_action: bool = False, source: str = "the env handed to the Trainer") -> VectorEnv:
    """`env` as a VectorEnv of `num_envs` copies on `device`: an instance as it is, a class or factory called as
    `env(num_envs, device)`; checked against the VectorEnv contract (a ValueError naming `source` and what is
    missing). `previous_action` wraps it in `PreviousAction`."""
    device = torch.device(device)
    built = call_factory(env, num_envs, device, source) if is_factory(env) else env
    built = check_vector_env(built, num_envs, device, source)
    return PreviousAction(built) if previous_action else built


__all__ = ["ENVS", "ENV_CHOICES", "CartPole", "CueMemory", "EnvFactory", "GymVectorEnv", "PreviousAction",
           "StepResult", "VectorEnv", "build_env", "is_env_name", "make_env", "rebuild_name"]
