"""Builders for tests: a spec or a network with sensible defaults."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from westflow.config import load_network
from westflow.inventory import Network
from westflow.spec import WorkloadSpec, parse_spec


@lru_cache(maxsize=1)
def national() -> Network:
    return load_network()


def make_spec(**overrides: Any) -> WorkloadSpec:
    """A batch CPU spec unless told otherwise (loose forms allowed, as in YAML)."""
    data: dict[str, Any] = {"name": "test-step", "tier": "batch", "accelerator": "cpu",
                            "cpus": 2, "memory_gb": 4, "duration_hours": 1}
    data.update(overrides)
    return parse_spec(data)
