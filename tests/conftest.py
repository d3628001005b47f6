"""Test setup: Triton kernels run on CPU tensors through the interpreter when there is no GPU.

TRITON_INTERPRET must be set before any @triton.jit function is defined, so it is set here, before the tests
import recurrent_ppo.kernels.
"""

import os

import numpy
import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Parallel workers (pytest -n) share the cores: one thread each, for the subprocesses the tests start too.
    # Oversubscribed OpenMP threads spin against each other and slow small CPU ops tenfold.
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


import triton  # noqa: E402 - only now: triton reads TRITON_INTERPRET when it is imported


def _version(module) -> tuple[int, int]:
    return tuple(int(part) for part in module.__version__.split(".")[:2])


if os.environ.get("TRITON_INTERPRET") == "1" and _version(triton) < (3, 9) and _version(numpy) >= (2, 4):
    # Triton 3.6's interpreter (the GPU machine's stack) turns scalar kernel arguments into ints with
    # int(1-element array), a TypeError since numpy 2.4 (triton-lang/triton#9171); 3.9 squeezes first. So do we.
    import triton.runtime.interpreter as interpreter

    patch_lang_tensor = interpreter._patch_lang_tensor

    def _patch_lang_tensor(tensor, scope):
        patch_lang_tensor(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.squeeze()))

    interpreter._patch_lang_tensor = _patch_lang_tensor

CUDA = torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords and not CUDA:
            item.add_marker(skip_gpu)
    items[:] = balanced_order(items, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))


def balanced_order(items: list, workers: int) -> list:
    """The order that lets `workers` pytest-xdist workers under worksteal finish together. worksteal hands each
    worker a contiguous share of the list (by count) and lets an idle worker take the tail of another's queue,
    never its next two tests: a long test started late leaves the other worker idle while it finishes. So the long
    tests (`slow(seconds=...)`) go to the shares, longest first to the least loaded, each at its share's head, and
    the short tests fill the shares in their collected order (a module's tests stay together). Long tests marked
    `together=<name>` share one worker: the cold inductor compiles, of which the first in a process pays for
    what the others reuse (the precompiled header, the compile workers) and two at once contend for the cores."""

    def seconds(item) -> float:
        return item.get_closest_marker("slow").kwargs["seconds"]

    units: dict[str, list] = {}
    for item in items:
        if slow := item.get_closest_marker("slow"):
            units.setdefault(slow.kwargs.get("together", item.nodeid), []).append(item)
    short = [item for item in items if not item.get_closest_marker("slow")]
    heads: list[list] = [[] for _ in range(workers)]
    loads = [0.0] * workers
    for unit in sorted(units.values(), key=lambda unit: sum(map(seconds, unit)), reverse=True):
        share = loads.index(min(loads))
        heads[share] += sorted(unit, key=seconds, reverse=True)
        loads[share] += sum(map(seconds, unit))
    ordered, left = [], len(items)
    for share, head in enumerate(heads):
        size = left // (workers - share)  # worksteal's split: len(pending) // workers still to serve
        fill = max(0, size - len(head))
        ordered += head + short[:fill]
        short, left = short[fill:], left - size
    return ordered + short


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def fresh_dynamo():
    """Dynamo's caches and counters emptied before and after the test, so it counts only its own graphs."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()

