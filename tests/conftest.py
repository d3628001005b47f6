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
    # The learning tests first, longest first (`slow(seconds=...)`). pytest-xdist's worksteal hands each worker a
    # contiguous share of this list and lets an idle worker take the tail of another's queue, never the test it
    # runs: a long test started last would leave the other worker idle while it finishes.
    def order(item) -> tuple[bool, float]:
        slow = item.get_closest_marker("slow")
        return slow is None, -(slow.kwargs.get("seconds", 0) if slow else 0)

    items.sort(key=order)


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

