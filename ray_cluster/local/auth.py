"""Ray token authentication for the local network.

Ray 2.60 enables token auth for local clusters. westflow generates one token
per state dir (``.westflow/auth_token``, mode 0600) and hands it to every Ray
process through ``RAY_AUTH_MODE=token`` + ``RAY_AUTH_TOKEN_PATH`` (never on a
command line, never in a log). Ray's own clients send the token only when
``RAY_AUTH_MODE=token`` is in their environment; :func:`client_env` and
:func:`export_lines` give exactly that, and :func:`auth_headers` serves plain
HTTP clients of the dashboard.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["enable_in_process", "TOKEN_FILE", "ensure_token", "read_token", "client_env", "export_lines",
           "auth_headers"]

TOKEN_FILE = "auth_token"
_MODE, _PATH, _TOKEN = "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_TOKEN"


def ensure_token(state_dir: Path) -> Path:
    """The token file of ``state_dir``, created (0600, 256 random bits) if missing; an existing one is made
    0600 again whatever mode it had (a token readable by others is a token shared with them)."""
    path = state_dir / TOKEN_FILE
    if path.exists() and not path.is_symlink():
        os.chmod(path, 0o600)
    if not path.exists() or not path.read_text(encoding="ascii").strip():
        state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(secrets.token_hex(32))
    return path


def read_token(state_dir: Path) -> str:
    return (state_dir / TOKEN_FILE).read_text(encoding="ascii").strip()


def client_env(state_dir: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's env) plus what Ray clients need to send the token.

    A ``RAY_AUTH_TOKEN`` inherited from elsewhere would win over the file, so it is dropped.
    """
    env = dict(os.environ if base is None else base)
    env.pop(_TOKEN, None)
    env[_MODE] = "token"
    env[_PATH] = str((state_dir / TOKEN_FILE).resolve())
    return env


def export_lines(state_dir: Path, dashboard_url: str) -> list[str]:
    """Shell lines for using the network by hand (``ray job submit``, ``ray status``)."""
    return [
        f"export {_MODE}=token",
        f"export {_PATH}={(state_dir / TOKEN_FILE).resolve()}",
        f"export RAY_ADDRESS={dashboard_url}",
        f"# dashboard {dashboard_url}: log in with the token in ${_PATH} (cat \"${_PATH}\")",
    ]


def auth_headers(state_dir: Path) -> dict[str, str]:
    """The ``Authorization`` header Ray's dashboard expects."""
    return {"Authorization": f"Bearer {read_token(state_dir)}"}


def enable_in_process(state_dir: Path) -> None:
    """Switch this process's Ray client to token auth with ``state_dir``'s token.

    Ray reads ``RAY_AUTH_MODE`` into its cached config when ``ray`` is imported,
    so the env alone is too late here: the config and the token cache are
    refreshed as Ray's own ``_enable_token_auth`` does.
    """
    os.environ.pop(_TOKEN, None)
    os.environ[_MODE] = "token"
    os.environ[_PATH] = str((state_dir / TOKEN_FILE).resolve())
    from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()
