"""WorkloadSpec: what a step needs, validated once, frozen after.

Loose forms are accepted only at the edge by :func:`parse_spec`
(``accelerator: "H800:8"``, ``{"cann": 4}``, ``"cpu"``) and stored in one
canonical :class:`AcceleratorRequest`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from westflow.errors import SpecError
from westflow.inventory import BATCH, REALTIME, Family, Network, Region

__all__ = ["AcceleratorRequest", "DatasetRef", "WorkloadSpec", "parse_spec", "load_spec", "SPEC_KEYS"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_MODEL = re.compile(r"^[A-Za-z0-9_.-]{1,32}$")
_FAMILIES = [f.value for f in Family]
SPEC_KEYS = (
    "name", "tenant", "tier", "origin", "accelerator", "cpus", "memory_gb", "duration_hours",
    "inputs", "deadline_hours", "priority",
)


def _num(field_name: str, value: Any, *, lo: float, hi: float, integer: bool = False, lo_open: bool = False) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SpecError(field_name, value, "an integer" if integer else "a number")
    if integer and not isinstance(value, int):
        if not (isinstance(value, float) and value.is_integer()):
            raise SpecError(field_name, value, "a whole number")
        value = int(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise SpecError(field_name, value, "a finite number")
    if value < lo or (lo_open and value == lo) or value > hi:
        bound = f"> {lo}" if lo_open else f">= {lo}"
        raise SpecError(field_name, value, f"{bound} and <= {hi}", problem="Out of range")
    return value


@dataclass(frozen=True, slots=True)
class AcceleratorRequest:
    """Canonical accelerator need: family, count and an optional model."""

    family: Family = Family.CPU
    count: int = 0
    model: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.family, Family):
            raise SpecError("accelerator.family", self.family, _FAMILIES)
        _num("accelerator.count", self.count, lo=0, hi=4096, integer=True)
        if self.family is Family.CPU and self.count != 0:
            raise SpecError("accelerator.count", self.count, "0 when family is cpu",
                            fix="ask for family cuda, cann or any to get accelerators.")
        if self.family is not Family.CPU and self.count == 0:
            raise SpecError("accelerator.count", self.count, f">= 1 when family is {self.family.value}",
                            fix="use family cpu for CPU-only work.")
        if self.model is not None:
            if self.family is Family.CPU:
                raise SpecError("accelerator.model", self.model, "absent when family is cpu")
            if not isinstance(self.model, str) or not _MODEL.match(self.model):
                raise SpecError("accelerator.model", self.model, "a model name such as H800 or Ascend910B")

    def __str__(self) -> str:
        if self.family is Family.CPU:
            return "cpu"
        return f"{self.model or self.family.value}:{self.count}"


@dataclass(frozen=True, slots=True)
class DatasetRef:
    """An input dataset: where it lives and how big it is."""

    name: str
    region: Region
    size_bytes: int
    bucket: str | None = None


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    """One step's needs. Validated on construction; change with :meth:`copy`."""

    name: str
    tier: str = BATCH
    origin: str | None = None
    accelerator: AcceleratorRequest = field(default_factory=AcceleratorRequest)
    cpus: float = 1.0
    memory_gb: float = 1.0
    duration_hours: float = 1.0
    tenant: str = "default"
    inputs: tuple[DatasetRef, ...] = ()
    deadline_hours: float | None = None
    priority: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise SpecError("name", self.name, "1-63 characters of letters, digits, '_', '-', '.'")
        if not isinstance(self.tenant, str) or not _NAME.match(self.tenant):
            raise SpecError("tenant", self.tenant, "1-63 characters of letters, digits, '_', '-', '.'")
        if not isinstance(self.tier, str) or not self.tier:
            raise SpecError("tier", self.tier, [BATCH, REALTIME])
        if self.origin is not None and not isinstance(self.origin, str):
            raise SpecError("origin", self.origin, "a city id such as 'shanghai'")
        if self.tier == REALTIME and self.origin is None:
            raise SpecError("origin", None, "a city id when tier is realtime",
                            fix="say where the users are, e.g. origin: shanghai.", problem="Missing")
        if not isinstance(self.accelerator, AcceleratorRequest):
            raise SpecError("accelerator", self.accelerator, "an AcceleratorRequest")
        _num("cpus", self.cpus, lo=0, hi=4096, lo_open=True)
        _num("memory_gb", self.memory_gb, lo=0, hi=65536)
        _num("duration_hours", self.duration_hours, lo=0, hi=24 * 365, lo_open=True)
        if self.deadline_hours is not None:
            _num("deadline_hours", self.deadline_hours, lo=0, hi=24 * 365, lo_open=True)
        _num("priority", self.priority, lo=-1000, hi=1000, integer=True)

    def copy(self, **changes: Any) -> WorkloadSpec:
        """A new spec with ``changes`` applied (validated again)."""
        return replace(self, **changes)

    def check_against(self, network: Network) -> None:
        """Raise SpecError if the tier or origin is unknown to ``network``."""
        if self.tier not in network.tiers:
            raise SpecError("tier", self.tier, sorted(network.tiers), problem="Unknown")
        if self.origin is not None and self.origin not in network.city_ids:
            raise SpecError("origin", self.origin, list(network.city_ids), problem="Unknown")


def _parse_accelerator(value: Any) -> AcceleratorRequest:
    if value is None or value == "cpu":
        return AcceleratorRequest()
    if isinstance(value, str):
        head, sep, tail = value.partition(":")
        if not sep or not tail.strip().isdigit():
            raise SpecError("accelerator", value, "'cpu', 'FAMILY:N' or 'MODEL:N' (e.g. 'H800:8', 'cann:4')")
        head, count = head.strip(), int(tail)
        if head.lower() in _FAMILIES:
            return AcceleratorRequest(Family(head.lower()), count)
        return _model_request(value, head, count)
    if isinstance(value, Mapping):
        keys = set(value)
        if keys and keys <= {"family", "count", "model"}:
            fam = value.get("family", "any" if "model" not in value else None)
            if fam is None:
                return _model_request(value, value["model"], value.get("count", 1))
            if not isinstance(fam, str) or fam.lower() not in _FAMILIES:
                raise SpecError("accelerator.family", fam, _FAMILIES)
            count = value.get("count", 0 if fam == "cpu" else 1)
            return AcceleratorRequest(Family(fam.lower()), count, value.get("model"))
        if len(value) == 1:
            (k, n), = value.items()
            if isinstance(k, str) and k.lower() in _FAMILIES:
                return AcceleratorRequest(Family(k.lower()), n)
            return _model_request(value, k, n)
        unknown = sorted(str(k) for k in keys - {"family", "count", "model"})
        raise SpecError("accelerator", unknown or value, ["family", "count", "model"], problem="Unknown keys in")
    raise SpecError("accelerator", value, "'cpu', 'H800:8' or {family: cuda|cann|any|cpu, count: N}")


_MODEL_FAMILY = {"ascend": Family.CANN}


def _model_request(raw: Any, model: Any, count: Any) -> AcceleratorRequest:
    if not isinstance(model, str) or not _MODEL.match(model):
        raise SpecError("accelerator", raw, "'cpu', 'FAMILY:N' or 'MODEL:N' (e.g. 'H800:8', 'cann:4')")
    fam = next((f for p, f in _MODEL_FAMILY.items() if model.lower().startswith(p)), Family.CUDA)
    return AcceleratorRequest(fam, count, model)


def _parse_inputs(value: Any) -> tuple[DatasetRef, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise SpecError("inputs", value, "a list of {name, region, size_gb}")
    out = []
    for i, item in enumerate(value):
        f = f"inputs.{i}"
        if not isinstance(item, Mapping):
            raise SpecError(f, item, "a mapping {name, region, size_gb}")
        extra = set(item) - {"name", "region", "size_gb", "size_bytes", "bucket"}
        if extra:
            raise SpecError(f"{f}.{sorted(map(str, extra))[0]}", item,
                            ["name", "region", "size_gb", "size_bytes", "bucket"], problem="Unknown key in")
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise SpecError(f"{f}.name", name, "a dataset name")
        region = item.get("region")
        if region not in [r.value for r in Region]:
            raise SpecError(f"{f}.region", region, [r.value for r in Region])
        if "size_bytes" in item:
            size = _num(f"{f}.size_bytes", item["size_bytes"], lo=0, hi=1e18, integer=True)
        else:
            size = int(_num(f"{f}.size_gb", item.get("size_gb"), lo=0, hi=1e9) * 1e9)
        bucket = item.get("bucket")
        if bucket is not None and not isinstance(bucket, str):
            raise SpecError(f"{f}.bucket", bucket, "a bucket name")
        out.append(DatasetRef(name, Region(region), size, bucket))
    return tuple(out)


def parse_spec(data: Any, network: Network | None = None, *, source: str | None = None) -> WorkloadSpec:
    """Turn loose input (a YAML mapping) into a validated WorkloadSpec."""
    try:
        if not isinstance(data, Mapping):
            raise SpecError("<spec>", data, "a mapping with keys " + ", ".join(SPEC_KEYS))
        unknown = [k for k in data if k not in SPEC_KEYS]
        if unknown:
            raise SpecError(str(unknown[0]), data[unknown[0]], SPEC_KEYS, problem="Unknown key")
        if "name" not in data:
            raise SpecError("name", None, "present", problem="Missing")
        kw: dict[str, Any] = {k: data[k] for k in data if k not in ("accelerator", "inputs")}
        kw["accelerator"] = _parse_accelerator(data.get("accelerator"))
        kw["inputs"] = _parse_inputs(data.get("inputs"))
        if isinstance(kw.get("tier"), str):
            kw["tier"] = kw["tier"].lower()
        if isinstance(kw.get("origin"), str):
            kw["origin"] = kw["origin"].lower()
        spec = WorkloadSpec(**kw)
        if network is not None:
            spec.check_against(network)
        return spec
    except SpecError as exc:
        if source and not exc.source:
            exc.source = source
            exc.args = (f"{source}: {exc.args[0]}",)
        raise
    except (TypeError, ValueError) as exc:
        raise SpecError("<spec>", data, f"a well-formed spec ({exc})", source=source) from None


def load_spec(path: Path | str, network: Network | None = None) -> WorkloadSpec:
    """Read a spec YAML file."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # ValueError: undecodable bytes, NUL in the path
        raise SpecError("<file>", str(p), "a readable UTF-8 YAML file", problem="Cannot read") from exc
    except RecursionError:
        raise SpecError("<yaml>", str(p), "YAML nested less deeply", source=str(p)) from None
    except yaml.YAMLError as exc:
        raise SpecError("<yaml>", str(exc).splitlines()[0], "valid YAML", source=str(p)) from None
    return parse_spec(data, network, source=str(p))
