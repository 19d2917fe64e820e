"""One array backend per job, chosen from what the node actually gives it.

::

    Ray / env assigned a GPU and CuPy opens it      -> cupy       (accelerator_mode "physical")
    Ray / env assigned an NPU and torch_npu opens it -> torch_npu (accelerator_mode "physical")
    an accelerator assigned but it cannot be opened  -> numpy     (accelerator_mode "logical", fallback)
    nothing assigned                                 -> numpy     (accelerator_mode "none")

Jobs are written once against the Python array API (``backend.xp``); the choice
and, above all, any fallback is logged at WARNING and put in :meth:`Backend.metadata`
so a job on a "GPU" node says that it ran NumPy in place of CUDA.

Probing goes through the :class:`DeviceProbe` seam; :class:`SystemProbe` is the real
one and tests pass fakes. Importing this module imports neither Ray, CuPy nor torch.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from jobs.job_errors import BackendUnavailable, JobArgumentError

__all__ = [
    "BACKENDS",
    "Assignment",
    "OpenedDevice",
    "DeviceProbe",
    "SystemProbe",
    "Backend",
    "select_backend",
    "numpy_backend",
]

log = logging.getLogger(__name__)

BackendName = Literal["numpy", "cupy", "torch_npu"]
BACKENDS: tuple[str, ...] = ("auto", "numpy", "cupy", "torch_npu")
_NO_DEVICES = {"", "-1", "NoDevFiles"}


@dataclass(frozen=True, slots=True)
class Assignment:
    """The accelerators this job was given, and who said so (ray, env, node or none)."""

    gpus: tuple[str, ...] = ()
    npus: tuple[str, ...] = ()
    source: str = "none"

    @property
    def family(self) -> str:
        """``cuda``, ``cann`` or ``none``: what the job was promised."""
        if self.gpus:
            return "cuda"
        if self.npus:
            return "cann"
        return "none"


@dataclass(frozen=True, slots=True)
class OpenedDevice:
    """An accelerator that answered: its array namespace and how to talk to it."""

    xp: Any
    device: Any
    name: str
    to_host: Callable[[Any], np.ndarray]
    sync: Callable[[], None] = lambda: None


class DeviceProbe(Protocol):
    """The seam between a job and the machine: what was assigned, and can it be opened."""

    def assignment(self) -> Assignment:
        """Accelerators assigned to this process (Ray first, then env, then the node)."""
        ...

    def open_cuda(self, ids: tuple[str, ...]) -> OpenedDevice:
        """Open the first assigned CUDA device or raise :class:`BackendUnavailable`."""
        ...

    def open_npu(self, ids: tuple[str, ...]) -> OpenedDevice:
        """Open the first assigned Ascend NPU or raise :class:`BackendUnavailable`."""
        ...


def _env_ids(name: str) -> tuple[str, ...] | None:
    value = os.environ.get(name)
    if value is None:
        return None
    value = value.strip()
    if value in _NO_DEVICES:
        return ()
    return tuple(v.strip() for v in value.split(",") if v.strip())


class SystemProbe:
    """The real probe: Ray's assignment, else the visibility env vars, else the node's devices."""

    def assignment(self) -> Assignment:
        ray = sys.modules.get("ray")
        if ray is not None and ray.is_initialized():
            ids = ray.get_runtime_context().get_accelerator_ids()
            return Assignment(tuple(ids.get("GPU", ())), tuple(ids.get("NPU", ())), "ray")
        gpus = _env_ids("CUDA_VISIBLE_DEVICES")
        npus = _env_ids("ASCEND_RT_VISIBLE_DEVICES")
        if gpus is not None or npus is not None:
            return Assignment(gpus or (), npus or (), "env")
        # A plain process outside Ray with no visibility vars owns the whole node.
        n = self._cuda_count()
        if n:
            return Assignment(tuple(str(i) for i in range(n)), (), "node")
        if os.path.exists("/dev/davinci0"):
            return Assignment((), ("0",), "node")
        return Assignment()

    @staticmethod
    def _cuda_count() -> int:
        if importlib.util.find_spec("cupy") is None:
            return 0
        try:
            import cupy

            return int(cupy.cuda.runtime.getDeviceCount())
        except Exception:  # no driver, no device: the node has no usable CUDA
            return 0

    def open_cuda(self, ids: tuple[str, ...]) -> OpenedDevice:
        try:
            import cupy
        except Exception as e:  # ImportError, or a broken CUDA install raising at import
            raise BackendUnavailable("cupy", f"cupy does not import ({e})") from e
        try:
            count = int(cupy.cuda.runtime.getDeviceCount())
            if count < 1:
                raise BackendUnavailable("cupy", "the CUDA runtime sees no device")
            cupy.cuda.Device(0).use()
            float(cupy.arange(8, dtype=cupy.float32).sum())  # compiles and runs a kernel
            props = cupy.cuda.runtime.getDeviceProperties(0)
        except BackendUnavailable:
            raise
        except Exception as e:
            raise BackendUnavailable("cupy", f"no usable CUDA device ({type(e).__name__}: {e})") from e
        import array_api_compat.cupy as xp

        name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        return OpenedDevice(xp, None, name, lambda a: np.asarray(cupy.asnumpy(a)),
                            lambda: cupy.cuda.get_current_stream().synchronize())

    def open_npu(self, ids: tuple[str, ...]) -> OpenedDevice:
        try:
            import torch
            import torch_npu  # noqa: F401  (registers the npu device with torch)
        except Exception as e:
            raise BackendUnavailable("torch_npu", f"torch/torch_npu do not import ({e})") from e
        try:
            if not torch.npu.is_available() or torch.npu.device_count() < 1:
                raise BackendUnavailable("torch_npu", "torch_npu sees no NPU")
            dev = torch.device("npu:0")
            float(torch.arange(8, dtype=torch.float32, device=dev).sum())
            name = str(torch.npu.get_device_name(0))
        except BackendUnavailable:
            raise
        except Exception as e:
            raise BackendUnavailable("torch_npu", f"no usable NPU ({type(e).__name__}: {e})") from e
        import array_api_compat.torch as xp

        return OpenedDevice(xp, dev, name, lambda a: a.detach().cpu().numpy(), torch.npu.synchronize)


def _numpy_xp() -> Any:
    import array_api_compat.numpy as xp

    return xp


@dataclass(frozen=True, slots=True)
class Backend:
    """The chosen array namespace plus the facts of how it was chosen."""

    name: BackendName
    xp: Any
    assignment: Assignment = field(default_factory=Assignment)
    device: Any = None
    device_name: str = "cpu"
    fallback_reason: str | None = None
    _to_host: Callable[[Any], np.ndarray] = np.asarray
    _sync: Callable[[], None] = lambda: None

    @property
    def accelerator_mode(self) -> str:
        """``physical`` (computing on it), ``logical`` (assigned, not used) or ``none``."""
        if self.name != "numpy":
            return "physical"
        return "logical" if self.assignment.family != "none" else "none"

    @property
    def fallback(self) -> bool:
        """True when an accelerator was assigned but the job computes with NumPy."""
        return self.accelerator_mode == "logical"

    def asarray(self, a: Any, dtype: Any = None) -> Any:
        """Move a host array to this backend's device."""
        if self.device is None:
            return self.xp.asarray(a, dtype=dtype)
        return self.xp.asarray(a, dtype=dtype, device=self.device)

    def to_numpy(self, a: Any) -> np.ndarray:
        """Bring an array back to the host as NumPy."""
        return self._to_host(a)

    def sync(self) -> None:
        """Wait for queued device work (for honest timings)."""
        self._sync()

    def describe(self) -> str:
        """One log line: what runs, on what, and any fallback."""
        text = f"array backend {self.name} on {self.device_name}"
        a = self.assignment
        if a.family != "none":
            ids = ",".join(a.gpus or a.npus)
            text += f" (assigned {a.family} ids [{ids}] by {a.source})"
        if self.fallback:
            want = "CUDA" if a.family == "cuda" else "CANN"
            text += f"; FALLBACK: ran NumPy in place of {want}: {self.fallback_reason}"
        return text

    def metadata(self) -> dict[str, Any]:
        """Facts for Dagster metadata and logs; the fallback is never left out."""
        a = self.assignment
        return {
            "backend": self.name,
            "backend_device": self.device_name,
            "accelerator_assigned": a.family,
            "accelerator_ids": ",".join(a.gpus or a.npus),
            "accelerator_source": a.source,
            "accelerator_mode": self.accelerator_mode,
            "accelerator_real": self.accelerator_mode == "physical",
            "backend_fallback": self.fallback,
            "backend_fallback_reason": self.fallback_reason or "",
        }


def numpy_backend(assignment: Assignment | None = None, reason: str | None = None) -> Backend:
    """NumPy on the host; ``reason`` says why, when an accelerator was assigned."""
    a = assignment or Assignment()
    if a.family != "none" and not reason:
        reason = "no reason given"
    return Backend("numpy", _numpy_xp(), a, None, "cpu", reason if a.family != "none" else None)


def _from_opened(name: BackendName, a: Assignment, d: OpenedDevice) -> Backend:
    return Backend(name, d.xp, a, d.device, d.name, None, d.to_host, d.sync)


def select_backend(
    probe: DeviceProbe | None = None,
    *,
    force: str = "auto",
    logger: logging.Logger | None = None,
) -> Backend:
    """Choose the backend from what the probe says was assigned and can be opened.

    ``force`` ("numpy", "cupy", "torch_npu") overrides the choice: a forced accelerator
    that cannot be opened raises :class:`BackendUnavailable` instead of falling back.
    """
    if force not in BACKENDS:
        raise JobArgumentError("--backend", force, BACKENDS)
    probe = probe or SystemProbe()
    logger = logger or log
    a = probe.assignment()
    if force == "cupy":
        backend = _from_opened("cupy", a, probe.open_cuda(a.gpus))
    elif force == "torch_npu":
        backend = _from_opened("torch_npu", a, probe.open_npu(a.npus))
    elif force == "numpy":
        backend = numpy_backend(a, "forced by --backend numpy")
    elif a.gpus:
        try:
            backend = _from_opened("cupy", a, probe.open_cuda(a.gpus))
        except BackendUnavailable as e:
            backend = numpy_backend(a, e.reason)
    elif a.npus:
        try:
            backend = _from_opened("torch_npu", a, probe.open_npu(a.npus))
        except BackendUnavailable as e:
            backend = numpy_backend(a, e.reason)
    else:
        backend = numpy_backend(a)
    logger.log(logging.WARNING if backend.fallback else logging.INFO, backend.describe())
    return backend
