"""Finding NaN and Inf before they poison a run: env outputs watched on the device during the rollout, loss and
gradients checked in the update's one host read."""

from __future__ import annotations

import math

import torch


class NonFiniteError(RuntimeError):
    """A value of the run went NaN or Inf; the message names the field, the iteration and, for env outputs, the
    env index and step."""


class EnvOutputWatch:
    """The first env and step, per watched field, at which an env output was not finite, kept on the device.

    `record` runs inside the (compiled) rollout step and only writes device tensors: no host sync, static
    shapes. `check` reads them once per iteration, where the host waits for the device anyway.
    """

    def __init__(self, fields: tuple[str, ...], device: torch.device | str) -> None:
        self.fields = fields
        self.first = torch.full((len(fields), 2), -1, dtype=torch.int64, device=device)  # [fields, (env, step)]

    def record(self, step: torch.Tensor, outputs: tuple[torch.Tensor, ...]) -> None:
        """Note where `outputs` (one `[N, ...]` tensor per field, in `fields` order) are not finite at `step` ([1]
        int64, the buffer's step index); the first occurrence per field is kept."""
        for index, value in enumerate(outputs):
            bad = ~torch.isfinite(value.reshape(value.shape[0], -1)).all(1)  # [N]
            hit = torch.stack([bad.to(torch.uint8).argmax(), step.reshape(())])  # the lowest bad env
            unset = self.first[index, 0] < 0
            self.first[index].copy_(torch.where(unset & bad.any(), hit, self.first[index]))

    def reset(self) -> None:
        self.first.fill_(-1)

    def check(self, iteration: int) -> None:
        """Raise NonFiniteError naming the first field that went non-finite during this iteration's rollout."""
        self.report(self.first.tolist(), iteration)

    def report(self, found: list[list[int]], iteration: int) -> None:
        """`check` on `first` as already read to the host (`[[env, step], ...]`, one pair per field), for a caller
        that reads it together with other flags."""
        for name, (env, step) in zip(self.fields, found):
            if env >= 0:
                raise NonFiniteError(f"the env returned a non-finite {name} in iteration {iteration}, at env {env}, "
                                     f"rollout step {step}: the env produced NaN or Inf")


def check_update(metrics: dict[str, float], iteration: int) -> None:
    """Raise NonFiniteError if a loss term or the gradient norm of the update was NaN or Inf: they are summed over
    the minibatches, so one non-finite minibatch shows in the means."""
    bad = {name: value for name, value in metrics.items() if not math.isfinite(value)}
    if bad:
        listed = ", ".join(f"{name}={value}" for name, value in bad.items())
        raise NonFiniteError(f"the update of iteration {iteration} went non-finite ({listed}); lower the learning "
                             f"rate or check the env's rewards and observations")
