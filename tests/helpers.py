"""Shared test helpers."""

import torch


def assert_close(actual: torch.Tensor, expected: torch.Tensor, name: str, **tolerances) -> None:
    """torch.testing.assert_close, with the name of the tensor that differs in the message."""
    torch.testing.assert_close(actual, expected, msg=lambda m: f"{name} differs: {m}", **tolerances)
