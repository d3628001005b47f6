"""GPU telemetry from NVML (nvidia-ml-py), sampled on a background thread so the training loop never waits on it.

Telemetry is best effort: without pynvml, an NVIDIA driver or a CUDA device, or when a sample fails, it logs one
line and the run goes on without `gpu_` metrics.
"""

from __future__ import annotations

import logging
import threading
from types import ModuleType, TracebackType
from typing import Any

import torch

log = logging.getLogger(__name__)


def cuda_index(device: torch.device) -> int | None:
    """Torch's ordinal of a CUDA `device` (`cuda` alone means the current one); None for any other device."""
    if device.type != "cuda":
        return None
    return device.index if device.index is not None else torch.cuda.current_device()


def _cuda_uuid(index: int) -> str | None:
    """The device's UUID as CUDA reports it (no `GPU-` prefix), or None where torch sees no CUDA device."""
    if not torch.cuda.is_available():
        return None
    return str(torch.cuda.get_device_properties(index).uuid)


def _nvml_handle(pynvml: ModuleType, index: int) -> Any:
    """NVML's handle of torch's CUDA device `index`.

    NVML numbers every GPU in PCI order and ignores CUDA_VISIBLE_DEVICES, so torch's ordinal can name another
    GPU there; the UUID names the same one in both (`MIG-` where the device is a MIG instance).
    """
    uuid = _cuda_uuid(index)
    if uuid is None:
        return pynvml.nvmlDeviceGetHandleByIndex(index)
    try:
        return pynvml.nvmlDeviceGetHandleByUUID("GPU-" + uuid)
    except pynvml.NVMLError:
        return pynvml.nvmlDeviceGetHandleByUUID("MIG-" + uuid)


def _sample(pynvml: ModuleType, handle: Any) -> dict[str, float]:
    """One reading of the GPU; keys are the names merged into the metrics records."""
    return {
        "gpu_util_pct": float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu),
        "gpu_mem_used_mib": pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20,
        "gpu_power_w": pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0,  # NVML reports milliwatts
        "gpu_sm_clock_mhz": float(pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM)),
        "gpu_temp_c": float(pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)),
    }


class GPUTelemetry:
    """Samples one GPU every `period_s` seconds on a daemon thread; `latest()` is the newest reading.

    `device_index` is torch's CUDA ordinal (see `cuda_index`); None means the run has no GPU, so nothing is
    sampled. Use as a context manager, or call `start()` and `stop()`.
    """

    def __init__(self, device_index: int | None, period_s: float = 1.0) -> None:
        # NVML's own counters (utilization) average over up to a second; sampling faster only adds overhead.
        if period_s < 1.0:
            raise ValueError(f"period_s={period_s} must be >= 1 (telemetry samples at most once a second)")
        self.device_index = device_index
        self.period_s = period_s
        self._latest: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pynvml: ModuleType | None = None

    def start(self) -> GPUTelemetry:
        """Open NVML and start sampling; logs one line and does nothing where NVML or the GPU is unavailable."""
        if self._thread is not None:
            raise RuntimeError("GPUTelemetry.start() called twice")
        if self.device_index is None:
            log.warning("GPU telemetry off: the run is not on a CUDA device")
            return self
        try:
            import pynvml
        except ImportError as err:
            log.warning("GPU telemetry off: cannot import pynvml (install nvidia-ml-py): %s", err)
            return self
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as err:
            log.warning("GPU telemetry off: NVML did not initialize: %s", err)
            return self
        try:
            handle = _nvml_handle(pynvml, self.device_index)
        except pynvml.NVMLError as err:
            pynvml.nvmlShutdown()
            log.warning("GPU telemetry off: NVML has no handle for CUDA device %d: %s", self.device_index, err)
            return self
        self._pynvml = pynvml
        self._thread = threading.Thread(target=self._run, args=(pynvml, handle), name="gpu-telemetry", daemon=True)
        self._thread.start()
        return self

    def _run(self, pynvml: ModuleType, handle: Any) -> None:
        while True:
            try:
                sample = _sample(pynvml, handle)
            except Exception as err:  # noqa: BLE001 - whatever NVML raises, training must go on
                self._latest = {}  # a stale reading would be logged as current for the rest of the run
                log.warning("GPU telemetry stopped: sampling GPU %d failed: %r", self.device_index, err)
                return
            self._latest = sample  # one reference swap, so readers never see a half-written dict
            if self._stop.wait(self.period_s):
                return

    def latest(self) -> dict[str, float]:
        """The newest reading, keys prefixed `gpu_`; empty before the first sample or when telemetry is off."""
        return dict(self._latest)

    def stop(self) -> None:
        """Stop sampling and close NVML; safe to call when start() did nothing, and more than once."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._pynvml is not None:
            pynvml, self._pynvml = self._pynvml, None
            try:
                pynvml.nvmlShutdown()
            except pynvml.NVMLError as err:
                log.warning("GPU telemetry: NVML shutdown failed: %s", err)

    def __enter__(self) -> GPUTelemetry:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
