"""Envs of one's own: named by import path (`package.module:attr`, `gym:package.module:attr`), or handed to the
Trainer as Python objects and named so that config.json says how to rebuild them.

An import path is the `env` string a run saves, so `eval`, `--resume` and `benchmark` rebuild the same env. An
object that importing cannot give back (an instance, a lambda, a function defined in `__main__`) is saved as a
`<...>` marker, with which they ask for the env again instead of guessing.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
import sys
from types import ModuleType

import torch

IMPORT_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
"""`package.module:attr`: a module importable from the current directory or sys.path, an attribute (dotted for
a nested one) of it."""

FACTORY = "a VectorEnv class or a factory (num_envs, device) -> VectorEnv"
GYM_FACTORY = "a function of no arguments returning a gymnasium env (wrappers and all)"


def is_import_path(name: str) -> bool:
    return IMPORT_PATH.fullmatch(name) is not None


def is_object_marker(name: str) -> bool:
    """Whether `name` is the marker of an env handed to the Trainer as an object that no import path rebuilds."""
    return name.startswith("<") and name.endswith(">")


def object_marker_error(name: str) -> ValueError:
    return ValueError(f"env {name} was handed to the Trainer as a Python object, which cannot be rebuilt from "
                      f"config.json; pass it again (Trainer(cfg, env=...), then restore() to resume; an Evaluator "
                      f"over it to evaluate), or give the env as an importable class or factory, package.module:attr "
                      f"(docs/envs.md), whose runs eval and --resume rebuild by that path")


def import_module(module: str, env: str) -> ModuleType:
    """The module `module` of the env named `env`; ImportError naming both when it cannot be imported."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name is not None and (module == error.name or module.startswith(error.name + ".")):
            raise ImportError(f"env {env!r}: there is no module {module!r} to import (No module named "
                              f"{error.name!r}): run from the folder that holds it, put that folder on PYTHONPATH, "
                              f"or install the package that provides it") from error
        raise ImportError(f"env {env!r}: importing module {module!r} failed: {error}") from error
    except Exception as error:  # the module's own code raised: its message is the news
        raise ImportError(f"env {env!r}: importing module {module!r} raised {type(error).__name__}: {error}") \
            from error


def attribute(module: ModuleType, attr: str) -> object | None:
    """`module.<attr>` (a dotted attr walks into classes), or None when there is none."""
    value: object = module
    for part in attr.split("."):
        value = getattr(value, part, None)
        if value is None:
            return None
    return value


def resolve(path: str, env: str, expected: str) -> object:
    """The object `module:attr` names, for the env named `env`, which must be `expected` (words, for messages)."""
    module_name, _, attr = path.partition(":")
    module = import_module(module_name, env)
    value = attribute(module, attr)
    if value is None:
        names = [name for name in dir(module) if not name.startswith("_")]
        close = difflib.get_close_matches(attr, names, n=3)
        hint = f" (close: {', '.join(close)})" if close else ""
        raise ValueError(f"env {env!r}: module {module_name!r} ({getattr(module, '__file__', 'built in')}) has no "
                         f"attribute {attr!r}{hint}; the env must name {expected}")
    if not callable(value):
        raise ValueError(f"env {env!r}: {path} is a {type(value).__name__}, not {expected}")
    return value


def check_call(factory: object, args: tuple, where: str, expected: str) -> None:
    """Raise ValueError starting with `where` (the env's name) unless `factory` can be called with `args` (what its
    signature says)."""
    try:
        signature = inspect.signature(factory)  # type: ignore[arg-type]
    except (TypeError, ValueError):  # builtins and some C types carry no signature: the call will tell
        return
    try:
        signature.bind(*args)
    except TypeError as error:
        raise ValueError(f"{where}: {describe(factory)}{signature} cannot be called with {len(args)} "
                         f"argument(s) ({error}); it must be {expected}") from None


def describe(obj: object) -> str:
    """`module.qualname` of a function or class (of an instance: its class's)."""
    named = obj if hasattr(obj, "__qualname__") else type(obj)
    return f"{getattr(named, '__module__', '?')}.{getattr(named, '__qualname__', type(obj).__name__)}"


def is_factory(env: object) -> bool:
    """Whether `env`, handed to the Trainer, builds envs (a class, a function) rather than being one."""
    return isinstance(env, type) or (callable(env) and not callable(getattr(env, "step", None)))


def call_factory(factory: object, num_envs: int, device: torch.device, where: str) -> object:
    """`factory(num_envs, device)`, after checking that it takes them (`where` names the env for the message)."""
    check_call(factory, (num_envs, device), where, FACTORY)
    return factory(num_envs, device)  # type: ignore[operator]


def rebuild_name(env: object) -> str:
    """How config.json names `env`, handed to the Trainer: `module:qualname` for a class or factory that importing
    by that path gives back, so eval and --resume rebuild it; else a `<...>` marker that asks for it again (an
    instance, whose constructor arguments are unknown; a lambda, a local function, one defined in `__main__`)."""
    if not is_factory(env):
        return f"<instance of {describe(env)}>"
    module, qualname = getattr(env, "__module__", None), getattr(env, "__qualname__", None)
    loaded = sys.modules.get(module) if isinstance(module, str) and module != "__main__" else None
    if loaded is not None and isinstance(qualname, str) and attribute(loaded, qualname) is env:
        path = f"{module}:{qualname}"
        if is_import_path(path):
            return path
    return f"<factory {describe(env)}>"
