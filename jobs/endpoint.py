"""A model endpoint as a Ray Serve application: one city's route, its replicas pinned where westflow placed them.

``build`` is the application builder westflow's Serve config names
(``import_path: jobs.endpoint:build``). Each request::

    POST /<service>/<city>   Authorization: Bearer <tenant API key>
    {"features": [0.1, ...]}            -> {"prediction", "probabilities", "model_version", "dc", "city"}

The key is checked before anything is scored: none or an unknown one is 401, another
tenant's is 403. The replica holds only SHA-256 digests of the keys (``user_config``),
never a key. A new ``model_version`` in ``user_config`` reloads the model in place
(Serve's ``reconfigure``): requests go on being answered by the old model until the
new one is loaded, so a rolling model update drops none.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np

from jobs.artifacts import load_model, model_version
from jobs.backend import select_backend
from jobs.entrypoint import resolve_region
from jobs.scoring import Scorer
from jobs.stores import Stores, s3_stores
from ray_cluster.api_keys import key_digest

__all__ = ["build", "ModelEndpoint", "key_digest", "AUTH_HEADER", "DC_HEADER", "SCORED_HEADER",
           "check_key"]

AUTH_HEADER = "authorization"
DC_HEADER = "x-westflow-dc"
SCORED_HEADER = "x-westflow-scored"  # how many requests this replica has scored (a refused one costs none)
log = logging.getLogger("westflow.serving")


def check_key(header: str | None, keys: dict[str, str], tenant: str) -> int:
    """HTTP status of a request's ``Authorization`` header: 200, 401 (none or unknown), 403 (another tenant's)."""
    if not header or not header.startswith("Bearer "):
        return 401
    owner = keys.get(key_digest(header[len("Bearer "):].strip()))
    if owner is None:
        return 401
    return 200 if owner == tenant else 403


def _node_dc() -> str:
    """The DC of the Ray node this replica runs on ("" outside Ray)."""
    import sys

    from westflow.tags import LABEL_DC

    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return ""
    return str(ray.get_runtime_context().get_node_labels().get(LABEL_DC, ""))


class ModelEndpoint:
    """One replica: the tenant's keys, the model of ``model_version``, the DC it runs in."""

    def __init__(self, model: str, tenant: str, city: str, stores: Stores | None = None) -> None:
        self.model, self.tenant, self.city = model, tenant, city
        self._stores = stores
        self.keys: dict[str, str] = {}
        self.version = ""
        self.scorer: Scorer | None = None
        self.scored = 0
        self.dc = _node_dc()
        self.region = resolve_region(None)
        self.backend = select_backend(logger=log)

    def reconfigure(self, config: dict[str, Any]) -> None:
        """New keys take effect at once; a new model version is loaded, then swapped in."""
        self.keys = dict(config.get("keys", {}))
        want = str(config.get("model_version", ""))
        if self.scorer is not None and want in ("", self.version):
            return
        stores = self._stores or s3_stores()
        arrays, meta = load_model(stores, self.region, self.model)
        got = model_version(arrays)
        if want and got != want:
            raise RuntimeError(f"Model {self.model!r} in S3 is version {got}, not the {want} asked for. "
                               "To fix: deploy again with the version nightly training wrote last.")
        self.scorer, self.version = Scorer(self.backend, arrays, meta), got

    def answer(self, auth: str | None, body: bytes) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON body) for one request."""
        status = check_key(auth, self.keys, self.tenant)
        if status != 200:
            return status, {"error": "missing or unknown API key" if status == 401
                             else f"this key is not a key of tenant {self.tenant!r}"}
        try:
            features = json.loads(body)["features"]
            assert self.scorer is not None
            label, p = self.scorer.score_one(np.asarray(features, dtype=np.float32))
        except (ValueError, KeyError, TypeError) as exc:
            return 400, {"error": f'send {{"features": [{len(self.scorer.features) if self.scorer else "n"} '
                                  f'numbers]}}: {type(exc).__name__}'}
        except Exception as exc:  # a shape mismatch from the model: the client's fault, said plainly
            return 400, {"error": str(exc).splitlines()[0][:200]}
        self.scored += 1
        return 200, {"prediction": label, "probabilities": [float(v) for v in p],
                     "model_version": self.version, "dc": self.dc, "city": self.city}


def build(args: dict[str, Any]) -> Any:
    """The Serve application of one service and city (called by Serve with the config's ``args``)."""
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    @serve.deployment(name="endpoint")
    class Endpoint(ModelEndpoint):
        async def __call__(self, request: Request) -> JSONResponse:
            status, body = self.answer(request.headers.get(AUTH_HEADER), await request.body())
            return JSONResponse(body, status_code=status,
                                headers={DC_HEADER: self.dc, SCORED_HEADER: str(self.scored)})

    return Endpoint.bind(str(args["model"]), str(args["tenant"]), str(args["city"]))  # type: ignore[attr-defined]
