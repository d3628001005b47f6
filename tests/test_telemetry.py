"""GPU telemetry: degrades to one log line without NVML or a GPU; with a fake pynvml, samples on its period."""

import logging
import sys
import threading
import time
import types

import pytest
import torch

from recurrent_ppo import telemetry
from recurrent_ppo.telemetry import GPUTelemetry, cuda_index

EXPECTED = {"gpu_util_pct": 87.0, "gpu_mem_used_mib": 3072.0, "gpu_power_w": 250.5, "gpu_sm_clock_mhz": 1980.0,
            "gpu_temp_c": 61.0}


def fake_pynvml(fail_on_sample: int | None = None, uuid_prefixes: tuple[str, ...] = ("GPU-",)) -> types.ModuleType:
    """A stand-in pynvml whose readings give EXPECTED; sample number `fail_on_sample` (1-based) raises NVMLError."""
    nvml = types.ModuleType("pynvml")
    nvml.calls = []
    nvml.samples = 0
    nvml.sampled = threading.Event()  # set after every complete sample
    nvml.failed = threading.Event()

    class NVMLError(Exception):
        pass

    def utilization(handle):
        nvml.samples += 1
        if nvml.samples == fail_on_sample:
            nvml.failed.set()
            raise NVMLError("GPU is lost")
        return types.SimpleNamespace(gpu=87, memory=40)

    def temperature(handle, sensor):
        assert sensor == nvml.NVML_TEMPERATURE_GPU
        nvml.sampled.set()
        return 61

    def handle_by_uuid(uuid):
        nvml.calls.append(("uuid", uuid))
        if not uuid.startswith(uuid_prefixes):
            raise NVMLError("Not Found")
        return ("handle", uuid)

    def clock(handle, kind):
        assert kind == nvml.NVML_CLOCK_SM
        return 1980

    nvml.NVMLError = NVMLError
    nvml.NVML_CLOCK_SM, nvml.NVML_TEMPERATURE_GPU = 1, 0
    nvml.nvmlInit = lambda: nvml.calls.append("init")
    nvml.nvmlShutdown = lambda: nvml.calls.append("shutdown")
    nvml.nvmlDeviceGetHandleByIndex = lambda index: nvml.calls.append(("index", index)) or ("handle", index)
    nvml.nvmlDeviceGetHandleByUUID = handle_by_uuid
    nvml.nvmlDeviceGetUtilizationRates = utilization
    nvml.nvmlDeviceGetMemoryInfo = lambda handle: types.SimpleNamespace(used=3 * 2**30, total=80 * 2**30)
    nvml.nvmlDeviceGetPowerUsage = lambda handle: 250_500  # milliwatts
    nvml.nvmlDeviceGetClockInfo = clock
    nvml.nvmlDeviceGetTemperature = temperature
    return nvml


@pytest.fixture
def nvml(monkeypatch):
    fake = fake_pynvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setattr(telemetry, "_cuda_uuid", lambda index: None)  # as on a machine where torch sees no GPU
    return fake


def telemetry_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "recurrent_ppo.telemetry"]


def sampler_alive() -> bool:
    return any(t.name == "gpu-telemetry" and t.is_alive() for t in threading.enumerate())


def test_real_pynvml_without_a_driver_logs_once_and_does_nothing(caplog):
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:
        pynvml.nvmlShutdown()
        pytest.skip("NVML works on this machine; this test covers machines without an NVIDIA driver")
    with caplog.at_level(logging.WARNING), GPUTelemetry(0) as gpu:
        assert not sampler_alive()
        assert gpu.latest() == {}
    lines = telemetry_lines(caplog)
    assert len(lines) == 1 and "NVML did not initialize" in lines[0], lines


def test_without_pynvml_logs_once_and_does_nothing(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    with caplog.at_level(logging.WARNING), GPUTelemetry(0) as gpu:
        assert gpu.latest() == {}
        assert not sampler_alive()
    lines = telemetry_lines(caplog)
    assert len(lines) == 1 and "cannot import pynvml" in lines[0], lines


def test_cpu_device_is_not_sampled(nvml, caplog):
    assert cuda_index(torch.device("cpu")) is None
    assert cuda_index(torch.device("cuda", 2)) == 2
    with caplog.at_level(logging.WARNING), GPUTelemetry(cuda_index(torch.device("cpu"))) as gpu:
        assert gpu.latest() == {}
    assert nvml.calls == [], "NVML is not touched for a CPU run"
    lines = telemetry_lines(caplog)
    assert len(lines) == 1 and "not on a CUDA device" in lines[0], lines


def test_sampler_reads_every_field_in_the_expected_units(nvml, caplog):
    with caplog.at_level(logging.WARNING), GPUTelemetry(1) as gpu:
        assert nvml.sampled.wait(timeout=10), "no sample was taken"
        reading = gpu.latest()
        reading["gpu_util_pct"] = -1.0  # latest() hands out a copy
        assert gpu.latest() == EXPECTED
    assert nvml.calls == ["init", ("index", 1), "shutdown"]
    assert not sampler_alive()
    assert telemetry_lines(caplog) == []


def test_sampler_waits_its_period_and_stop_interrupts_the_wait(nvml):
    gpu = GPUTelemetry(0, period_s=60.0).start()
    assert nvml.sampled.wait(timeout=10)
    time.sleep(0.2)
    assert nvml.samples == 1, "the sampler must sleep between samples, not spin"
    begin = time.perf_counter()
    gpu.stop()
    assert time.perf_counter() - begin < 10, "stop() must not wait out the 60 s period"
    assert not sampler_alive()
    assert nvml.calls[-1] == "shutdown"
    gpu.stop()  # a second stop is harmless
    assert nvml.calls.count("shutdown") == 1


def test_a_failing_sample_stops_sampling_with_one_line_and_drops_the_stale_reading(monkeypatch, caplog):
    nvml = fake_pynvml(fail_on_sample=2)
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    monkeypatch.setattr(telemetry, "_cuda_uuid", lambda index: None)
    with caplog.at_level(logging.WARNING), GPUTelemetry(0, period_s=1.0) as gpu:
        assert nvml.sampled.wait(timeout=10)
        assert gpu.latest() == EXPECTED
        assert nvml.failed.wait(timeout=10), "the second sample (after 1 s) was not taken"
        deadline = time.monotonic() + 10
        while sampler_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not sampler_alive(), "the sampler thread ends after a failed sample"
        assert gpu.latest() == {}
    lines = telemetry_lines(caplog)
    assert len(lines) == 1 and "GPU telemetry stopped" in lines[0] and "GPU is lost" in lines[0], lines
    assert nvml.calls[-1] == "shutdown"


@pytest.mark.parametrize("prefixes,handle", [(("GPU-",), "GPU-1234"), (("MIG-",), "MIG-1234")],
                         ids=["whole-device", "mig-instance"])
def test_the_gpu_is_found_by_its_cuda_uuid(monkeypatch, prefixes, handle):
    nvml = fake_pynvml(uuid_prefixes=prefixes)
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    monkeypatch.setattr(telemetry, "_cuda_uuid", lambda index: "1234")
    with GPUTelemetry(0) as gpu:
        assert nvml.sampled.wait(timeout=10)
        assert gpu.latest() == EXPECTED
    assert ("uuid", handle) in nvml.calls
    assert not any(call[0] == "index" for call in nvml.calls if isinstance(call, tuple)), "the ordinal is not used"


def test_unknown_gpu_logs_once_and_closes_nvml(monkeypatch, caplog):
    nvml = fake_pynvml(uuid_prefixes=("nothing matches",))
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    monkeypatch.setattr(telemetry, "_cuda_uuid", lambda index: "1234")
    with caplog.at_level(logging.WARNING), GPUTelemetry(0) as gpu:
        assert gpu.latest() == {}
        assert not sampler_alive()
    assert nvml.calls[0] == "init" and nvml.calls[-1] == "shutdown"
    lines = telemetry_lines(caplog)
    assert len(lines) == 1 and "no handle for CUDA device 0" in lines[0], lines


def test_period_below_one_second_is_rejected():
    with pytest.raises(ValueError, match="period_s=0.5 must be >= 1"):
        GPUTelemetry(0, period_s=0.5)


@pytest.mark.gpu
def test_real_nvml_samples_the_training_gpu(caplog):
    """On a GPU machine: NVML finds torch's device by its UUID and every field reads a plausible value."""
    with caplog.at_level(logging.WARNING), GPUTelemetry(cuda_index(torch.device("cuda"))) as gpu:
        deadline = time.monotonic() + 5
        while not gpu.latest() and time.monotonic() < deadline:
            time.sleep(0.05)
        sample = gpu.latest()
    assert not telemetry_lines(caplog), telemetry_lines(caplog)
    assert set(sample) == set(EXPECTED), sample
    total_mib = torch.cuda.get_device_properties(0).total_memory / 2**20
    assert 0 <= sample["gpu_util_pct"] <= 100, sample
    assert 0 < sample["gpu_mem_used_mib"] <= total_mib, sample
    assert sample["gpu_power_w"] > 0 and sample["gpu_sm_clock_mhz"] > 0 and 0 < sample["gpu_temp_c"] < 120, sample
