"""Backend selection for each case, with fakes at the DeviceProbe seam (no real device)."""

from __future__ import annotations

import logging
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest

from jobs.backend import Assignment, Backend, OpenedDevice, SystemProbe, select_backend
from jobs.job_errors import BackendUnavailable, JobArgumentError


def _fake_device(name: str) -> OpenedDevice:
    """A stand-in accelerator: NumPy's namespace under a device's name."""
    import array_api_compat.numpy as xp

    return OpenedDevice(xp, None, name, np.asarray)


@dataclass
class FakeProbe:
    """Says what was assigned and whether each accelerator opens (a device or a reason)."""

    assigned: Assignment
    cuda: OpenedDevice | str = "no CUDA here"
    npu: OpenedDevice | str = "no NPU here"

    def assignment(self) -> Assignment:
        return self.assigned

    def open_cuda(self, ids: tuple[str, ...]) -> OpenedDevice:
        if isinstance(self.cuda, str):
            raise BackendUnavailable("cupy", self.cuda)
        return self.cuda

    def open_npu(self, ids: tuple[str, ...]) -> OpenedDevice:
        if isinstance(self.npu, str):
            raise BackendUnavailable("torch_npu", self.npu)
        return self.npu


H100 = _fake_device("NVIDIA H100 80GB HBM3")
ASCEND = _fake_device("Ascend910B")

CASES = [
    # (probe, backend, mode, fallback, assigned family)
    (FakeProbe(Assignment(gpus=("0",), source="ray"), cuda=H100), "cupy", "physical", False, "cuda"),
    (FakeProbe(Assignment(npus=("0", "1"), source="ray"), npu=ASCEND), "torch_npu", "physical",
     False, "cann"),
    (FakeProbe(Assignment(), cuda=H100, npu=ASCEND), "numpy", "none", False, "none"),
    (FakeProbe(Assignment(gpus=("0",), source="ray")), "numpy", "logical", True, "cuda"),
    (FakeProbe(Assignment(npus=("3",), source="env")), "numpy", "logical", True, "cann"),
]


@pytest.mark.parametrize(("probe", "name", "mode", "fallback", "family"), CASES,
                         ids=["cuda", "ascend", "cpu", "logical-gpu", "logical-npu"])
def test_backend_follows_what_the_node_gives(
    probe: FakeProbe, name: str, mode: str, fallback: bool, family: str
) -> None:
    b = select_backend(probe)
    md = b.metadata()
    assert (b.name, b.accelerator_mode, b.fallback) == (name, mode, fallback)
    assert md["backend"] == name and md["accelerator_assigned"] == family
    assert md["accelerator_real"] is (mode == "physical")
    assert md["backend_fallback"] is fallback


def test_unassigned_gpu_is_not_used_even_if_present() -> None:
    """A CUDA device the job was not given stays untouched: NumPy, no fallback."""
    assert select_backend(FakeProbe(Assignment(), cuda=H100)).name == "numpy"


@pytest.mark.parametrize(("probe", "want"), [
    (FakeProbe(Assignment(gpus=("0",), source="ray"), cuda="cudaErrorNoDevice"), "CUDA"),
    (FakeProbe(Assignment(npus=("0",), source="ray"), npu="torch_npu does not import"), "CANN"),
], ids=["gpu", "npu"])
def test_fallback_is_logged_and_reported(
    probe: FakeProbe, want: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="jobs.backend"):
        b = select_backend(probe)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert f"ran NumPy in place of {want}" in warnings[0].getMessage()
    reason = probe.cuda if want == "CUDA" else probe.npu
    assert b.metadata()["backend_fallback_reason"] == reason


def test_force_numpy_on_gpu_node_is_a_reported_fallback() -> None:
    b = select_backend(FakeProbe(Assignment(gpus=("0",), source="ray"), cuda=H100), force="numpy")
    assert b.name == "numpy" and b.fallback
    assert "forced" in b.metadata()["backend_fallback_reason"]


def test_forced_accelerator_that_cannot_open_raises() -> None:
    with pytest.raises(BackendUnavailable, match="cupy unavailable: no CUDA here"):
        select_backend(FakeProbe(Assignment()), force="cupy")


def test_unknown_backend_flag() -> None:
    with pytest.raises(JobArgumentError, match="Invalid --backend 'tpu'; must be one of: auto"):
        select_backend(FakeProbe(Assignment()), force="tpu")


def test_backend_moves_arrays_both_ways() -> None:
    b: Backend = select_backend(FakeProbe(Assignment(gpus=("0",)), cuda=H100))
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert np.array_equal(b.to_numpy(b.asarray(a) * 2), a * 2)
    assert "H100" in b.describe()


@pytest.mark.parametrize(("env", "want"), [
    ({"CUDA_VISIBLE_DEVICES": "0,1"}, Assignment(gpus=("0", "1"), source="env")),
    ({"ASCEND_RT_VISIBLE_DEVICES": "2"}, Assignment(npus=("2",), source="env")),
    ({"CUDA_VISIBLE_DEVICES": ""}, Assignment(source="env")),
    ({"CUDA_VISIBLE_DEVICES": "-1"}, Assignment(source="env")),
], ids=["cuda-env", "ascend-env", "empty", "minus-one"])
def test_system_probe_reads_visibility_env(
    env: dict[str, str], want: Assignment, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("ASCEND_RT_VISIBLE_DEVICES", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        pytest.skip("a Ray session is open in this process; the probe would ask Ray")
    assert SystemProbe().assignment() == want


def test_logical_gpu_on_this_machine_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real probe, a GPU assigned by env, no device: NumPy, said loudly."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    try:
        SystemProbe().open_cuda(("0",))
    except BackendUnavailable:
        pass
    else:
        pytest.skip("this machine has a usable CUDA device")
    b = select_backend(SystemProbe())
    assert b.name == "numpy" and b.accelerator_mode == "logical"


def test_importing_jobs_needs_no_gpu_ray_or_torch() -> None:
    code = ("import sys, jobs, jobs.backend, jobs.model, jobs.training, jobs.etl, jobs.train, "
            "jobs.batch_infer, jobs.realtime_score, jobs.gang; "
            "print(sorted(m for m in ('cupy', 'torch', 'torch_npu', 'ray', 'dagster_pipes') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _gpu_check() -> object:
    import importlib

    return importlib.import_module("benchmarks.gpu_check")


@pytest.mark.parametrize(("name", "row"), [
    ("NVIDIA H100 80GB HBM3", "H100 SXM"), ("NVIDIA H100 PCIe", "H100 PCIe"),
    ("NVIDIA H100 NVL", "H100 NVL"), ("NVIDIA H200", "H200 SXM"), ("NVIDIA H200 NVL", "H200 NVL"),
    ("NVIDIA A100-SXM4-80GB", "A100"), ("Tesla T4", None),
], ids=lambda v: str(v))
def test_gpu_check_peak_table(name: str, row: str | None) -> None:
    mod = _gpu_check()
    assert mod.peak_key(name) == row  # type: ignore[attr-defined]


def test_gpu_check_exits_0_without_cuda() -> None:
    try:
        SystemProbe().open_cuda(("0",))
    except BackendUnavailable:
        pass
    else:
        pytest.skip("this machine has CUDA; the lead runs gpu_check there by hand")
    out = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "no usable CUDA device" in out.stdout
