"""The one exception hierarchy of westflow.

Catch at the level you can handle::

    WestflowError
    ├── ConfigError          a config file is malformed (file, field path, value, allowed)
    ├── SpecError            a WorkloadSpec is malformed (field, value, allowed)
    ├── InfeasibleError      a valid spec fits no data center (spec + every DC's reason)
    ├── CodeError            the code or requirements a step ships cannot run (what, where)
    ├── ClusterError         the Ray network is not reachable or not in the expected state
    └── StorageError         S3 failed (endpoint, bucket, key)
        ├── EndpointUnreachable
        ├── BucketMissing
        ├── AccessDenied
        └── ObjectMissing

Every message names the field, quotes the bad value, lists what is allowed and,
where there is one, ends with a fix.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from typing import Any, Protocol

__all__ = [
    "WestflowError",
    "field_message",
    "ConfigError",
    "SpecError",
    "InfeasibleError",
    "CodeError",
    "ClusterError",
    "StorageError",
    "EndpointUnreachable",
    "BucketMissing",
    "AccessDenied",
    "ObjectMissing",
]


class WestflowError(Exception):
    """Base of every error westflow raises on purpose."""


def _allowed_text(allowed: str | Sequence[str] | None) -> str:
    if allowed is None:
        return ""
    if isinstance(allowed, str):
        return f"; must be {allowed}"
    return "; must be one of: " + ", ".join(str(a) for a in allowed)


MAX_ECHO = 200  # characters of a bad value (or field) an error message repeats


def _cut(text: str) -> str:
    """``text`` cut to :data:`MAX_ECHO` characters, saying how long it was (hostile input is echoed, not dumped)."""
    return text if len(text) <= MAX_ECHO else f"{text[:MAX_ECHO]}... ({len(text):,} chars)"


def _value_text(value: Any) -> str:
    """``repr(value)``, cut; a huge string is cut before repr() copies it."""
    if isinstance(value, str) and len(value) > MAX_ECHO:
        return f"{repr(value[:MAX_ECHO])[:MAX_ECHO]}... ({len(value):,} chars)"
    return _cut(repr(value))


def _field_text(field: str) -> str:
    """The field as printed: quoted when it would not read as a name (empty, control characters)."""
    text = str(field)
    return _cut(text if text and text.isprintable() and text == text.strip() else repr(text))


def field_message(
    field: str,
    value: Any,
    allowed: str | Sequence[str] | None = None,
    *,
    problem: str = "Invalid",
    where: str | None = None,
    fix: str | None = None,
    message: str | None = None,
) -> str:
    """The one shape of a bad-input message: ``[where: ]problem field 'value'; must be ... . To fix: ...``.

    ``message`` replaces ``problem field 'value'`` when the caller has a better sentence.
    """
    head = message.rstrip(".") if message else f"{problem} {_field_text(field)} {_value_text(value)}"
    text = f"{_field_text(where)}: " if where else ""
    text += f"{head}{_allowed_text(allowed)}."
    return text + (f" To fix: {fix}" if fix else "")


class ConfigError(WestflowError):
    """A config file failed its schema or a cross-field check."""

    def __init__(
        self,
        file: str,
        field: str,
        value: Any,
        allowed: str | Sequence[str] | None = None,
        *,
        problem: str = "Invalid",
        fix: str | None = None,
    ) -> None:
        self.file = file
        self.field = field
        self.value = value
        self.allowed = allowed
        super().__init__(field_message(field, value, allowed, problem=problem, where=file, fix=fix))


class SpecError(WestflowError):
    """A WorkloadSpec field is missing, unknown or out of range."""

    def __init__(
        self,
        field: str,
        value: Any,
        allowed: str | Sequence[str] | None = None,
        *,
        problem: str = "Invalid",
        source: str | None = None,
        fix: str | None = None,
    ) -> None:
        self.field = field
        self.value = value
        self.allowed = allowed
        self.source = source
        super().__init__(field_message(field, value, allowed, problem=problem, where=source, fix=fix))


class _Rejected(Protocol):
    """What an :class:`InfeasibleError` reads of a rejection (``westflow.placement.Rejection``).

    A protocol, not an import: errors sit below every other module of the domain.
    """

    @property
    def data_center(self) -> str: ...
    @property
    def reason(self) -> Enum: ...
    @property
    def detail(self) -> str: ...


class _Named(Protocol):
    """What an :class:`InfeasibleError` reads of the spec (``westflow.spec.WorkloadSpec``)."""

    @property
    def name(self) -> str: ...
    @property
    def tier(self) -> str: ...
    @property
    def origin(self) -> str | None: ...


class InfeasibleError(WestflowError):
    """No data center can take the spec; carries every data center's reason.

    The message (``str(exc)``, one line per data center) is written on first read: an admission
    cycle catches thousands of these and reads only ``rejected``.
    """

    def __init__(self, spec: _Named, rejected: Sequence[_Rejected]) -> None:
        super().__init__()
        self.spec = spec
        self.rejected = tuple(rejected)
        self._message: str | None = None

    def __str__(self) -> str:
        if self._message is None:
            spec = self.spec
            lines = "\n".join(f"  {r.data_center}: {r.reason.value}: {r.detail}" for r in self.rejected)
            self._message = (
                f"No data center can run {spec.name!r} (tier {spec.tier!r}"
                f"{', origin ' + repr(spec.origin) if spec.origin else ''}):\n{lines}\n"
                "To fix: relax or change the resource requirements, or wait for capacity."
            )
        return self._message

    @property
    def args(self) -> tuple[str]:  # type: ignore[override]  # (the message, as an eager exception has it)
        return (str(self),)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"

    def __reduce__(self) -> tuple[type[InfeasibleError], tuple[_Named, tuple[_Rejected, ...]]]:
        # (BaseException's would call __init__ with the message alone: it could not cross a process)
        return type(self), (self.spec, self.rejected)


class CodeError(WestflowError):
    """The code a step ships (working dir, modules, requirements) cannot be shipped or cannot run there.

    One line that names what and where; raised before submission when it can be known.
    """


class ClusterError(WestflowError):
    """The Ray network is unreachable or not what the inventory says."""


class StorageError(WestflowError):
    """An S3 operation failed; names the endpoint, bucket and key."""

    def __init__(
        self, message: str, *, endpoint: str = "", bucket: str = "", key: str = ""
    ) -> None:
        self.endpoint = endpoint
        self.bucket = bucket
        self.key = key
        where = f" (endpoint {endpoint!r}, bucket {bucket!r}, key {key!r})"
        super().__init__(message + where)


class EndpointUnreachable(StorageError):
    """The S3 endpoint did not answer in time."""


class BucketMissing(StorageError):
    """The bucket does not exist."""


class AccessDenied(StorageError):
    """The credentials were refused."""


class ObjectMissing(StorageError):
    """The key does not exist (or is not complete yet)."""
