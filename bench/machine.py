"""What machine a benchmark ran on: a folder-safe id for its stored baseline, and the facts stored in the JSON.

`python bench/machine.py` prints the id, e.g. `nvidia-h100-80gb-hbm3_torch-2.11.0-cu128_triton-3.6.0` or
`cpu-intel-r-xeon-r-processor-2c_torch-2.13.0-cpu_triton-3.9.0`: the GPU (or CPU model and core count) and the
torch/triton versions, since a baseline is only comparable on the same hardware and software.
"""

from __future__ import annotations

import os
import platform
import re
from typing import Any

import torch
import triton


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_driver_version() -> str:
    """The NVIDIA driver version via NVML (nvidia-ml-py), or why it could not be read."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            version = pynvml.nvmlSystemGetDriverVersion()
        finally:
            pynvml.nvmlShutdown()
        return version.decode() if isinstance(version, bytes) else str(version)
    except Exception as error:  # metadata only: record why, never block a benchmark run on it
        return f"unavailable ({type(error).__name__}: {error})"


def sanitize(text: str) -> str:
    """Lower-case, every run of characters other than [a-z0-9.] turned into one '-'."""
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-")


def machine_id() -> str:
    """Folder name of this machine's baselines: the device, then the torch and triton versions."""
    if torch.cuda.is_available():
        device = torch.cuda.get_device_name()
    else:
        device = f"cpu {cpu_model()} {os.cpu_count()}c"
    parts = (device, f"torch {torch.__version__}", f"triton {triton.__version__}")
    return "_".join(sanitize(part) for part in parts)


def machine_info() -> dict[str, Any]:
    """What the benchmark JSON records about the machine beyond pytest-benchmark's own `cpu` entry."""
    cuda = torch.cuda.is_available()
    return {
        "bench_machine_id": machine_id(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "cuda": torch.version.cuda,
        "gpu_name": torch.cuda.get_device_name() if cuda else None,
        "gpu_count": torch.cuda.device_count() if cuda else 0,
        "gpu_driver": gpu_driver_version() if cuda else None,
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_num_threads": torch.get_num_threads(),
    }


if __name__ == "__main__":
    print(machine_id())
