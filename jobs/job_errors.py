"""Errors the workloads raise on purpose, under westflow's one hierarchy.

::

    WestflowError                       (westflow.errors)
    └── JobError                        a workload could not run as asked
        ├── JobArgumentError            a CLI flag is missing, malformed or out of range
        ├── BackendUnavailable          an accelerator backend cannot be opened (reason inside)
        ├── ModelMismatch               a saved model does not fit the data it is given
        └── GangError                   a gang could not be placed, or left its data center

Messages name the field, quote the bad value, list what is allowed and end with a fix.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from westflow.errors import WestflowError, field_message

__all__ = ["JobError", "JobArgumentError", "BackendUnavailable", "ModelMismatch", "GangError"]


class JobError(WestflowError):
    """A workload could not run as asked."""


class JobArgumentError(JobError):
    """A command-line argument is missing, malformed or out of range."""

    def __init__(
        self,
        field: str,
        value: Any,
        allowed: str | Sequence[str] | None = None,
        *,
        problem: str = "Invalid",
        fix: str | None = None,
        message: str | None = None,
    ) -> None:
        self.field = field
        self.value = value
        self.allowed = allowed
        super().__init__(field_message(field, value, allowed, problem=problem, fix=fix, message=message))


class BackendUnavailable(JobError):
    """An accelerator backend was assigned but cannot be used here; ``reason`` says why."""

    def __init__(self, backend: str, reason: str) -> None:
        self.backend = backend
        self.reason = reason
        super().__init__(f"{backend} unavailable: {reason}")


class ModelMismatch(JobError):
    """A saved model and the data given to it disagree (features, classes)."""


class GangError(JobError):
    """A gang placement group failed, or its workers are not all in one data center."""

    def __init__(self, message: str, *, nodes: dict[int, str | None] | None = None) -> None:
        self.nodes = dict(nodes or {})
        super().__init__(message)
