"""How to reach one Ray cluster: its dashboard (Jobs API) URL and its auth token.

Resolved from explicit configuration first, then from the environment, with
the names Ray 2.60 itself reads:

- URL: ``dashboard_url``, else ``$WESTFLOW_RAY_ADDRESS``, else ``$RAY_ADDRESS``
  (an ``http(s)://`` dashboard address, as ``ray job submit`` takes it);
- token: ``token``, else ``token_path`` (a file), else ``$RAY_AUTH_TOKEN``, else
  ``$RAY_AUTH_TOKEN_PATH``, else Ray's default file ``~/.ray/auth_token``. As in
  Ray, a token file that is named but unreadable or empty is an error, never
  skipped.

westflow keeps token auth on, so no token is an error that says where to put
one. The local network is one producer of these values: ``westflow up`` prints
the ``export`` lines, and ``westflow demo``/``ui`` pass them on.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from westflow.errors import ClusterError

__all__ = ["ClusterAccess", "ADDRESS_ENV", "RAY_ADDRESS_ENV", "TOKEN_ENV", "TOKEN_PATH_ENV", "DEFAULT_TOKEN_PATH"]

ADDRESS_ENV = "WESTFLOW_RAY_ADDRESS"
RAY_ADDRESS_ENV = "RAY_ADDRESS"
TOKEN_ENV = "RAY_AUTH_TOKEN"
TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
DEFAULT_TOKEN_PATH = Path("~/.ray/auth_token")


@dataclass(frozen=True, slots=True)
class ClusterAccess:
    """A Ray cluster's dashboard URL and token; the token is never printed."""

    dashboard_url: str
    token: str = field(repr=False)

    def __post_init__(self) -> None:
        if not self.dashboard_url.startswith(("http://", "https://")):
            raise ClusterError(f"Invalid Ray dashboard URL {self.dashboard_url!r}; must be http(s)://host:port "
                               "(the dashboard and Jobs API, not the GCS address). "
                               f"To fix: set {ADDRESS_ENV}=http://127.0.0.1:8265 or the resource's ray_address.")
        if not self.token:
            raise ClusterError("Empty Ray auth token. To fix: set RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH.")
        object.__setattr__(self, "dashboard_url", self.dashboard_url.rstrip("/"))

    def headers(self) -> dict[str, str]:
        """The ``Authorization`` header Ray's dashboard and Jobs API expect."""
        return {"Authorization": f"Bearer {self.token}"}

    def job_url(self, job_id: str) -> str:
        """The job's page in the dashboard."""
        return f"{self.dashboard_url}/#/jobs/{job_id}"

    @classmethod
    def resolve(cls, *, dashboard_url: str | None = None, token: str | None = None,
                token_path: str | Path | None = None, env: Mapping[str, str] | None = None) -> ClusterAccess:
        """Explicit values first, then ``env`` (default: this process's environment); see the module doc."""
        env = os.environ if env is None else env
        return cls(_url(dashboard_url, env), _token(token, token_path, env))


def _url(explicit: str | None, env: Mapping[str, str]) -> str:
    if explicit:
        return explicit
    for name in (ADDRESS_ENV, RAY_ADDRESS_ENV):
        value = env.get(name, "").strip()
        if value:
            if not value.startswith(("http://", "https://")):
                raise ClusterError(f"Invalid {name} {value!r}; must be the Ray dashboard URL http(s)://host:port. "
                                   f"To fix: set {ADDRESS_ENV}=http://<head>:8265 (it wins over {RAY_ADDRESS_ENV}).")
            return value
    raise ClusterError(f"No Ray cluster address: neither the resource's ray_address nor ${ADDRESS_ENV} or "
                       f"${RAY_ADDRESS_ENV} is set. To fix: export {ADDRESS_ENV}=http://<head>:8265 "
                       "(`westflow up` prints the lines for the local network).")


def _read(path: Path, source: str) -> str:
    try:
        text = path.expanduser().read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ClusterError(f"Cannot read the Ray auth token file {str(path)!r} ({source}): {exc}. "
                           "To fix: point it at the cluster's token file (`westflow up` writes one).") from None
    if not text:
        raise ClusterError(f"The Ray auth token file {str(path)!r} ({source}) is empty. "
                           "To fix: point it at the cluster's token file.")
    return text


def _token(explicit: str | None, path: str | Path | None, env: Mapping[str, str]) -> str:
    if explicit:
        return explicit
    if path:
        return _read(Path(path), "ray_auth_token_path")
    if env.get(TOKEN_ENV, "").strip():
        return env[TOKEN_ENV].strip()
    if env.get(TOKEN_PATH_ENV, "").strip():
        return _read(Path(env[TOKEN_PATH_ENV].strip()), f"${TOKEN_PATH_ENV}")
    home = env.get("HOME")
    default = Path(home) / ".ray" / "auth_token" if home else DEFAULT_TOKEN_PATH.expanduser()
    if default.is_file():
        return _read(default, "Ray's default token file")
    raise ClusterError(f"No Ray auth token: neither the resource's ray_auth_token(_path) nor ${TOKEN_ENV} or "
                       f"${TOKEN_PATH_ENV} is set, and {DEFAULT_TOKEN_PATH} does not exist. To fix: export "
                       f"{TOKEN_PATH_ENV}=<the cluster's token file> (`westflow up` prints it for the local network).")
