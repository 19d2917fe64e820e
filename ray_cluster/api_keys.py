"""Tenants' API keys for live services: made here, kept in the state dir (0600), never logged.

Serve's HTTP ingress has no authentication of its own (Ray's token guards the control
plane only), so every request to a westflow service carries a tenant's key. The keys
live in ``<state_dir>/api-keys.json``; a replica receives only their SHA-256 digests
(:func:`digests`), so no key is in Serve's config, the dashboard or a log.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
from pathlib import Path

from westflow.errors import SpecError

__all__ = ["KEYS_FILE", "key_digest", "issue", "key_of", "digests", "tenants"]

KEYS_FILE = "api-keys.json"
_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}", re.ASCII)


def key_digest(key: str) -> str:
    """What a replica holds of a key."""
    return hashlib.sha256(key.encode()).hexdigest()


def _path(state_dir: Path | str) -> Path:
    return Path(state_dir) / KEYS_FILE


def _read(state_dir: Path | str) -> dict[str, list[str]]:
    try:
        raw = json.loads(_path(state_dir).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise SpecError(str(_path(state_dir)), "<unreadable>", "a JSON object {tenant: [key, ...]}",
                        fix=f"remove the file and issue keys again ({exc.__class__.__name__}).") from None
    return {str(t): [str(k) for k in ks] for t, ks in raw.items()} if isinstance(raw, dict) else {}


def _write(state_dir: Path | str, keys: dict[str, list[str]]) -> None:
    path = _path(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(keys, f, indent=2)
    os.replace(tmp, path)
    os.chmod(path, 0o600)


def _check(tenant: str) -> str:
    if not isinstance(tenant, str) or not _TENANT.fullmatch(tenant):
        raise SpecError("tenant", tenant, "1-63 characters of letters, digits, '_', '-', '.'")
    return tenant


def issue(state_dir: Path | str, tenant: str) -> str:
    """A new key for ``tenant`` (its older keys stay valid)."""
    keys = _read(state_dir)
    key = f"wf_{_check(tenant)}_{secrets.token_urlsafe(24)}"
    keys.setdefault(tenant, []).append(key)
    _write(state_dir, keys)
    return key


def key_of(state_dir: Path | str, tenant: str) -> str:
    """``tenant``'s first key, issued now if it has none."""
    have = _read(state_dir).get(_check(tenant))
    return have[0] if have else issue(state_dir, tenant)


def tenants(state_dir: Path | str) -> tuple[str, ...]:
    return tuple(sorted(_read(state_dir)))


def digests(state_dir: Path | str) -> dict[str, str]:
    """Digest -> tenant for every key (what replicas check requests against)."""
    return {key_digest(k): t for t, ks in _read(state_dir).items() for k in ks}
