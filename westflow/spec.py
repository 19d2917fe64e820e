"""WorkloadSpec: what a step needs, validated once, frozen after.

:class:`WorkloadSpec`, :class:`AcceleratorRequest` and :class:`DatasetRef` are
frozen, strict pydantic models (unknown keys rejected, no coercion of ``"4"`` to
4). Loose forms are accepted only at the edge by :func:`parse_spec`
(``accelerator: "H800:8"``, ``{"cann": 4}``, ``"cpu"``; ``inputs`` with
``size_gb``) and stored in one canonical form. Every failure, of the schema or
of a cross-field rule, is a :class:`~westflow.errors.SpecError` naming the
field (dotted path), quoting the bad value and saying what is allowed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any, ClassVar, NoReturn, Self

from annotated_types import Ge, Gt, Le
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from westflow.errors import SpecError
from westflow.inventory import BATCH, REALTIME, Family, Network, Region
from westflow.yamlio import MAX_SPEC_BYTES, YamlInputError, read_yaml

__all__ = ["AcceleratorRequest", "DatasetRef", "WorkloadSpec", "parse_spec", "load_spec", "read_spec_yaml",
           "SPEC_KEYS", "MAX_WAIT_S", "DURATION_TEXT", "INSTANT_TEXT", "duration_seconds", "instant"]

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
_MODEL = r"^[A-Za-z0-9_.-]{1,32}$"
_MODEL_RE = re.compile(_MODEL)
_COUNT_RE = re.compile(r"^[ \t]*([0-9]+)[ \t]*$", re.ASCII)
_FAMILIES = [f.value for f in Family]
_REGIONS = [r.value for r in Region]
_NAME_TEXT = "1-63 characters of letters, digits, '_', '-', '.'"
_MODEL_TEXT = "a model name such as H800 or Ascend910B"
_ACCEL_FORMS = "'cpu', 'FAMILY:N' or 'MODEL:N' (e.g. 'H800:8', 'cann:4')"
_Allowed = dict[str, str | list[str]]
_INPUT_ALLOWED: _Allowed = {"name": "a dataset name", "region": _REGIONS, "bucket": "a bucket name"}
MAX_WAIT_S = 30 * 86400.0  # the longest a step may wait in the admission queue: 30 days
DURATION_TEXT = "seconds (a number) or a duration such as '90s', '30m', '2h', '1d'"
_DURATION_RE = re.compile(r"^[ \t]*([0-9]{1,12}(?:\.[0-9]{1,9})?)[ \t]*([smhd])[ \t]*$", re.ASCII)
_UNIT_S = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
INSTANT_TEXT = "an ISO-8601 time with its UTC offset, such as '2026-11-30T08:00:00+08:00'"
_RULE = "spec_rule"  # the error type of a cross-field rule; its ctx carries allowed, problem, fix


def _rule(allowed: str | list[str], *, problem: str = "Invalid", fix: str | None = None) -> PydanticCustomError:
    """A cross-field rule broken: becomes ``SpecError(field, value, allowed, problem=, fix=)``."""
    return PydanticCustomError(_RULE, "{allowed}", {"allowed": allowed, "problem": problem, "fix": fix})


def _whole(value: Any) -> Any:
    """Integer fields take whole floats (``8.0`` -> 8); anything else goes on to the strict int check.

    A whole float past 2**53 stays a float: the check calls it out of range instead of echoing 300 digits.
    """
    return int(value) if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53 else value


def duration_seconds(value: Any) -> float | None:
    """Seconds of a loose duration: a number of seconds, or ``"90s"``, ``"30m"``, ``"2h"``, ``"1d"`` (ASCII
    digits only); None if ``value`` is neither (the caller raises its own typed error, bounds included)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        m = _DURATION_RE.match(value)
        if m:
            return float(m[1]) * _UNIT_S[m[2]]
    return None


def instant(value: Any) -> datetime | None:
    """A timezone-aware datetime of a loose instant (an aware datetime, or ISO-8601 text with its offset,
    ``Z`` for UTC); None if ``value`` is neither: a naive time is ambiguous, so it is refused too."""
    if isinstance(value, str) and 0 < len(value) <= 64:
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
    if isinstance(value, datetime) and value.tzinfo is not None and value.utcoffset() is not None:
        return value
    return None


class _Frozen(BaseModel):
    """Strict, frozen, no unknown keys; setting an attribute is an AttributeError, as on a frozen dataclass."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    # field -> what is allowed, said for any error of that field but a cross-field rule's
    _allowed: ClassVar[_Allowed] = {}

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is frozen; make a changed copy instead of setting {name!r}")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is frozen; cannot delete {name!r}")

    @classmethod
    def _build(cls, prefix: str, data: dict[str, Any], whole: Any = None, unknown: str = "Unknown key") -> Self:
        """Validate ``data``; the first failure becomes a SpecError whose field starts with ``prefix``."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise _spec_error(cls, exc, prefix, whole, unknown) from None


def _spec_error(model: type[_Frozen], exc: ValidationError, prefix: str, whole: Any, unknown: str) -> SpecError:
    """The first error of ``exc`` (unknown keys first, as named by sorted key) as today's SpecError."""
    errors = exc.errors(include_url=False)
    extra = sorted((e for e in errors if e["type"] == "extra_forbidden"), key=lambda e: str(e["loc"][0]))
    first = extra[0] if extra else errors[0]
    loc = first["loc"]
    name = str(loc[0]) if loc else "<spec>"
    field = prefix + ".".join(str(p) for p in loc)
    kind, value, ctx = first["type"], first.get("input"), first.get("ctx") or {}
    info = model.model_fields.get(name)
    if kind == "extra_forbidden":
        return SpecError(field, value if whole is None else whole, list(model.model_fields), problem=unknown)
    if kind == _RULE:
        return SpecError(field, value, ctx["allowed"], problem=ctx["problem"], fix=ctx["fix"])
    if kind == "missing":
        return SpecError(field, None, "present", problem="Missing")
    if name in model._allowed or info is None:
        return SpecError(field, value, model._allowed.get(name, str(first["msg"])))
    if kind in ("greater_than", "greater_than_equal", "less_than_equal") or (
            kind == "float_type" and isinstance(value, int) and not isinstance(value, bool)) or (  # an int past float
            kind == "int_type" and isinstance(value, float) and value.is_integer()):  # a whole float past 2**53
        return SpecError(field, value, _range_text(info.metadata), problem="Out of range")
    if kind == "finite_number":
        return SpecError(field, value, "a finite number")
    if info.annotation in (int, int | None):
        return SpecError(field, value, "a whole number" if isinstance(value, float) else "an integer")
    return SpecError(field, value, "a number")


def _range_text(constraints: list[Any]) -> str:
    """A number field's bounds as the error says them: ``> 0 and <= 4096``."""
    lo = next(c for c in constraints if isinstance(c, Gt | Ge))
    hi = next(c.le for c in constraints if isinstance(c, Le))
    return f"{f'> {lo.gt}' if isinstance(lo, Gt) else f'>= {lo.ge}'} and <= {hi}"


class AcceleratorRequest(_Frozen):
    """Canonical accelerator need: family, count and an optional model."""

    family: Family = Family.CPU
    count: int = Field(default=0, ge=0, le=4096, validate_default=True)
    model: str | None = Field(default=None, pattern=_MODEL)
    _allowed: ClassVar[_Allowed] = {"family": _FAMILIES, "model": _MODEL_TEXT}

    def __init__(self, family: Family = Family.CPU, count: int = 0, model: str | None = None) -> None:
        try:
            BaseModel.__init__(self, family=family, count=count, model=model)
        except ValidationError as exc:
            raise _spec_error(AcceleratorRequest, exc, "accelerator.", None, "Unknown key") from None

    @field_validator("count", mode="before")
    @classmethod
    def _count_whole(cls, value: Any) -> Any:
        return _whole(value)

    @field_validator("count")
    @classmethod
    def _count_fits_family(cls, count: int, info: ValidationInfo) -> int:
        family = info.data.get("family")
        if family is Family.CPU and count != 0:
            raise _rule("0 when family is cpu", fix="ask for family cuda, cann or any to get accelerators.")
        if family is not None and family is not Family.CPU and count == 0:
            raise _rule(f">= 1 when family is {family.value}", fix="use family cpu for CPU-only work.")
        return count

    @field_validator("model", mode="before")
    @classmethod
    def _model_needs_accelerators(cls, model: Any, info: ValidationInfo) -> Any:
        if model is not None and info.data.get("family") is Family.CPU:
            raise _rule("absent when family is cpu")
        return model

    def __str__(self) -> str:
        if self.family is Family.CPU:
            return "cpu"
        return f"{self.model or self.family.value}:{self.count}"


class DatasetRef(_Frozen):
    """An input dataset: where it lives and how big it is."""

    name: str = Field(min_length=1)
    region: Region
    size_bytes: int = Field(ge=0, le=1e18)
    bucket: str | None = None
    _allowed: ClassVar[_Allowed] = _INPUT_ALLOWED

    def __init__(self, name: str, region: Region, size_bytes: int, bucket: str | None = None) -> None:
        try:
            BaseModel.__init__(self, name=name, region=region, size_bytes=size_bytes, bucket=bucket)
        except ValidationError as exc:
            raise _spec_error(DatasetRef, exc, "", None, "Unknown key") from None

    @field_validator("size_bytes", mode="before")
    @classmethod
    def _size_whole(cls, value: Any) -> Any:
        return _whole(value)


class WorkloadSpec(_Frozen):
    """One step's needs. Validated on construction; change with :meth:`copy`.

    Fields are declared in the order they are checked: the first one that fails names the error.
    """

    name: str = Field(pattern=_NAME)
    tenant: str = Field(default="default", pattern=_NAME)
    tier: str = Field(default=BATCH, min_length=1)
    origin: str | None = Field(default=None, validate_default=True)
    accelerator: AcceleratorRequest = Field(default_factory=AcceleratorRequest)
    cpus: float = Field(default=1.0, gt=0, le=4096, allow_inf_nan=False)
    memory_gb: float = Field(default=1.0, ge=0, le=65536, allow_inf_nan=False)
    duration_hours: float = Field(default=1.0, gt=0, le=24 * 365, allow_inf_nan=False)
    inputs: tuple[DatasetRef, ...] = ()
    deadline_hours: float | None = Field(default=None, gt=0, le=24 * 365, allow_inf_nan=False)
    # not before this instant (batch-like tiers only); finish by that one: placement may defer a batch
    # step to cheaper hours within them (docs/placement.md)
    start_after: datetime | None = None
    deadline: datetime | None = None
    priority: int = Field(default=0, ge=-1000, le=1000)
    # seconds the step may wait in the admission queue; None: the configured default (tenants.yaml)
    max_wait: float | None = Field(default=None, gt=0, le=MAX_WAIT_S, allow_inf_nan=False)
    # checked against tenants.yaml at admission; None: realtime for tier realtime, else production
    priority_class: str | None = Field(default=None, pattern=_NAME)
    _allowed: ClassVar[_Allowed] = {
        "name": _NAME_TEXT, "tenant": _NAME_TEXT, "tier": [BATCH, REALTIME], "origin": "a city id such as 'shanghai'",
        "accelerator": "an AcceleratorRequest", "inputs": "a tuple of DatasetRef",
        "priority_class": f"a priority class of tenants.yaml ({_NAME_TEXT})",
    }

    def __init__(self, **fields: Any) -> None:
        try:
            BaseModel.__init__(self, **fields)
        except ValidationError as exc:
            raise _spec_error(WorkloadSpec, exc, "", None, "Unknown key") from None

    @field_validator("origin")
    @classmethod
    def _realtime_has_origin(cls, origin: str | None, info: ValidationInfo) -> str | None:
        if origin is None and info.data.get("tier") == REALTIME:
            raise _rule("a city id when tier is realtime", problem="Missing",
                        fix="say where the users are, e.g. origin: shanghai.")
        return origin

    @field_validator("start_after", "deadline", mode="before")
    @classmethod
    def _instant(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            return None
        got = instant(value)
        if got is None:
            naive = isinstance(value, datetime) or (isinstance(value, str) and instant(value + "+00:00") is not None)
            raise _rule(INSTANT_TEXT, problem="Naive" if naive else "Invalid",
                        fix="say the offset, e.g. +08:00 for Asia/Shanghai." if naive or isinstance(value, date)
                        else None)
        if info.field_name == "start_after" and info.data.get("tier") == REALTIME:
            raise _rule("absent when tier is realtime", fix="real-time steps run at once; drop start_after.")
        if info.field_name == "deadline":
            after = info.data.get("start_after")
            if after is not None and got <= after:
                raise _rule(f"after start_after ({after.isoformat()})", problem="Out of range")
        return got

    @field_validator("priority", mode="before")
    @classmethod
    def _priority_whole(cls, value: Any) -> Any:
        return _whole(value)

    @property
    def max_wait_s(self) -> float | None:
        """Seconds the step may wait in the admission queue (None: the configured default)."""
        return self.max_wait

    def copy(self, **changes: Any) -> Self:
        """A new spec with ``changes`` applied (validated again)."""
        return type(self)(**{**self.__dict__, **changes})

    def check_against(self, network: Network) -> None:
        """Raise SpecError if the tier or origin is unknown to ``network``."""
        if self.tier not in network.tiers:
            raise SpecError("tier", self.tier, sorted(network.tiers), problem="Unknown")
        if self.origin is not None and self.origin not in network.city_ids:
            raise SpecError("origin", self.origin, list(network.city_ids), problem="Unknown")
        acc = self.accelerator
        if acc.model is not None and acc.family in (Family.CUDA, Family.CANN):
            families = _model_families(network)
            has = families.get(acc.model)
            if has is not None and has is not acc.family:
                models = sorted(m for m, f in families.items() if f is acc.family)
                raise SpecError(
                    "accelerator.model", acc.model, f"a {acc.family.value} model, as family is "
                    f"{acc.family.value} ({acc.model} is a {has.value} model; {acc.family.value} models here: "
                    f"{', '.join(models) or 'none'})",
                    fix=f"ask for family {has.value} (or any), or for a {acc.family.value} model.")


SPEC_KEYS = tuple(WorkloadSpec.model_fields)


# -- the edge: loose YAML forms -> canonical models ----------------------------------------------


class _InputEntry(_Frozen):
    """One entry of ``inputs`` as written: ``size_gb`` or ``size_bytes``."""

    name: str = Field(min_length=1)
    region: Region = Field(strict=False)  # "east" -> Region.EAST
    size_gb: float | None = Field(default=None, ge=0, le=1e9, allow_inf_nan=False)
    size_bytes: int | None = Field(default=None, ge=0, le=1e18)
    bucket: str | None = None
    _allowed: ClassVar[_Allowed] = _INPUT_ALLOWED

    @field_validator("size_bytes", mode="before")
    @classmethod
    def _size_whole(cls, value: Any) -> Any:
        return _whole(value)

    @model_validator(mode="after")
    def _has_size(self) -> Self:
        if self.size_bytes is None and "size_bytes" in self.model_fields_set:
            raise PydanticCustomError(_RULE, "", {"allowed": "an integer", "problem": "Invalid", "fix": None})
        if self.size_bytes is None and self.size_gb is None:
            raise PydanticCustomError(_RULE, "", {"allowed": "a number", "problem": "Invalid", "fix": None})
        return self


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
        data = {"name": None, "region": None, **item}  # absent reads as None, as in the message
        if "size_bytes" in item:
            data.pop("size_gb", None)  # size_bytes wins
        try:
            e = _InputEntry.model_validate(data)
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            if err["type"] == _RULE and not err["loc"]:  # the size rule: the field the entry lacks
                key = "size_bytes" if "size_bytes" in item else "size_gb"
                raise SpecError(f"{f}.{key}", item.get(key), err["ctx"]["allowed"]) from None
            raise _spec_error(_InputEntry, exc, f + ".", item, "Unknown key in") from None
        size = e.size_bytes if e.size_bytes is not None else int((e.size_gb or 0.0) * 1e9)
        out.append(DatasetRef(e.name, e.region, size, e.bucket))
    return tuple(out)


def _parse_accelerator(value: Any, network: Network | None) -> AcceleratorRequest:
    if value is None or value == "cpu":
        return AcceleratorRequest()
    if isinstance(value, str):
        head, sep, tail = value.partition(":")
        digits = _COUNT_RE.match(tail)  # ASCII digits only: int() would read '٣' as 3
        if not sep or not digits:
            raise SpecError("accelerator", value, _ACCEL_FORMS)
        if len(digits[1]) > 9:  # past any count, and int() of 5,000 digits is refused by Python
            raise SpecError("accelerator.count", digits[1], "<= 4096", problem="Out of range")
        head, count = head.strip(), int(digits[1])
        if head.lower() in _FAMILIES:
            return AcceleratorRequest(Family(head.lower()), count)
        return _model_request(value, head, count, network)
    if isinstance(value, Mapping):
        keys = set(value)
        if keys and keys <= {"family", "count", "model"}:
            fam = value.get("family", "any" if "model" not in value else None)
            if fam is None:
                return _model_request(value, value["model"], value.get("count", 1), network)
            if not isinstance(fam, str) or fam.lower() not in _FAMILIES:
                raise SpecError("accelerator.family", fam, _FAMILIES)
            count = value.get("count", 0 if fam == "cpu" else 1)
            return AcceleratorRequest(Family(fam.lower()), count, value.get("model"))
        if len(value) == 1:
            (k, n), = value.items()
            if isinstance(k, str) and k.lower() in _FAMILIES:
                return AcceleratorRequest(Family(k.lower()), n)
            return _model_request(value, k, n, network)
        unknown = sorted(str(k) for k in keys - {"family", "count", "model"})
        raise SpecError("accelerator", unknown or value, ["family", "count", "model"], problem="Unknown keys in")
    raise SpecError("accelerator", value, "'cpu', 'H800:8' or {family: cuda|cann|any|cpu, count: N}")


_MODEL_FAMILY = {"ascend": Family.CANN}


def _model_request(raw: Any, model: Any, count: Any, network: Network | None) -> AcceleratorRequest:
    """A request that names only a model: its family as the network has it, else guessed from the name."""
    if not isinstance(model, str) or not _MODEL_RE.match(model):
        raise SpecError("accelerator", raw, _ACCEL_FORMS)
    fam = _model_families(network).get(model) if network is not None else None
    if fam is None:
        fam = next((f for p, f in _MODEL_FAMILY.items() if model.lower().startswith(p)), Family.CUDA)
    return AcceleratorRequest(fam, count, model)


def _model_families(network: Network) -> dict[str, Family]:
    """Each accelerator model of ``network`` and its family."""
    return {p.model: p.family for d in network.data_centers for p in d.pools}


def _parse_max_wait(value: Any) -> float:
    """``max_wait`` as written (seconds, or ``"30m"``) -> seconds, within (0, 30 days]."""
    seconds = duration_seconds(value)
    if seconds is None:
        raise SpecError("max_wait", value, DURATION_TEXT)
    if not 0 < seconds <= MAX_WAIT_S:  # NaN too
        raise SpecError("max_wait", value, f"> 0 and <= {MAX_WAIT_S:.0f} s (30 days)", problem="Out of range")
    return seconds


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
        kw["accelerator"] = _parse_accelerator(data.get("accelerator"), network)
        kw["inputs"] = _parse_inputs(data.get("inputs"))
        if kw.get("max_wait") is not None:
            kw["max_wait"] = _parse_max_wait(kw["max_wait"])
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


def read_spec_yaml(path: Path | str) -> Any:
    """A spec-like YAML file's data (at most :data:`~westflow.yamlio.MAX_SPEC_BYTES`, aliases bounded, keys
    unique); any failure a SpecError naming the file."""
    try:
        return read_yaml(Path(path), MAX_SPEC_BYTES)
    except YamlInputError as exc:
        raise SpecError(exc.field, exc.value, exc.allowed, problem=exc.problem, source=str(path)) from None


def load_spec(path: Path | str, network: Network | None = None) -> WorkloadSpec:
    """Read a spec YAML file (see :func:`read_spec_yaml`)."""
    return parse_spec(read_spec_yaml(path), network, source=str(path))
