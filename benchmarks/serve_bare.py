"""The baseline of ``benchmarks.serve_bench``: a bare Ray Serve deployment of the same model, no westflow."""

from __future__ import annotations

import json
from typing import Any


def build(args: dict[str, Any]) -> Any:
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    from jobs.artifacts import load_model
    from jobs.backend import select_backend
    from jobs.entrypoint import resolve_region
    from jobs.scoring import Scorer
    from jobs.stores import s3_stores

    @serve.deployment(name="bare")
    class Bare:
        def __init__(self, model: str) -> None:
            arrays, meta = load_model(s3_stores(), resolve_region(None), model)
            self.scorer = Scorer(select_backend(), arrays, meta)

        async def __call__(self, request: Request) -> JSONResponse:
            label, p = self.scorer.score_one(json.loads(await request.body())["features"])
            return JSONResponse({"prediction": label, "probabilities": [float(v) for v in p]})

    return Bare.bind(str(args["model"]))  # type: ignore[attr-defined]
