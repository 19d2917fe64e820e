"""Gang training: one worker per placement-group bundle, all inside one data center.

A spec with more accelerators than a node has becomes ``RayRequest.bundles``
(each bundle pins ``dc:<id>``). Inside the Ray job we create the placement group
(STRICT_PACK when one node can hold it all, else PACK), start one
:class:`_Worker` per bundle, check that every worker's node advertises the same
``dc:<id>`` (:func:`westflow.tags.dc_of_resources`), then train data-parallel:
each step the global minibatch is split across workers, each returns its
gradient, and the driver applies their row-weighted mean — the same update as
one process on the whole batch. Like ``jobs.train`` it checkpoints every epoch
and resumes from the latest checkpoint (``--run-id``, ``--stop-after``).

    python -m jobs.gang --dataset synthetic --model clf-gang --region west \\
        --bundles '[{"GPU": 8, "CPU": 1, "dc:zhongwei": 0.001}, {"GPU": 8, "CPU": 1, "dc:zhongwei": 0.001}]' \\
        --per-node 8
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from jobs.artifacts import RegionalCheckpoints, checkpoint_prefix, save_model
from jobs.backend import DeviceProbe, numpy_backend
from jobs.dataio import load_labelled
from jobs.entrypoint import JobArgumentParser, JobContext, positive_int, run_job
from jobs.job_errors import GangError, JobArgumentError
from jobs.model import ModelConfig, epoch_permutation, sgd_update
from jobs.stores import CheckpointStoreLike, Stores
from jobs.training import EpochStats, TrainConfig, accuracy, resume_point, save_epoch
from ray_cluster.live import init_here
from westflow.tags import NPU, dc_of_resources

__all__ = ["GangPlan", "GangResult", "plan_gang", "worker_options", "check_one_dc",
           "train_gang", "parser", "main"]


@dataclass(frozen=True, slots=True)
class GangPlan:
    """Validated bundles, the strategy for them, and the one data center they pin."""

    bundles: tuple[dict[str, float], ...]
    strategy: str
    dc: str


@dataclass
class GangResult:
    params: dict[str, np.ndarray]
    plan: GangPlan
    nodes: dict[int, str] = field(default_factory=dict)
    workers: list[dict[str, Any]] = field(default_factory=list)
    history: list[EpochStats] = field(default_factory=list)
    resumed_from: int | None = None
    complete: bool = True


def _accelerators(bundle: dict[str, float]) -> float:
    return float(bundle.get("GPU", 0.0)) + float(bundle.get(NPU, 0.0))


def plan_gang(bundles: Sequence[dict[str, float]], per_node: int | None = None) -> GangPlan:
    """Check the bundles pin one data center; STRICT_PACK if ``per_node`` holds them all."""
    if not bundles:
        raise JobArgumentError("--bundles", list(bundles), "a non-empty list of bundles",
                               fix="pass RayRequest.bundles (set when count > per_node).")
    dcs = {dc_of_resources(dict(b)) for b in bundles}
    if len(dcs) != 1 or None in dcs:
        raise JobArgumentError("--bundles", [dict(b) for b in bundles],
                               "bundles that all pin the same dc:<id>",
                               fix="build them with westflow.tags.ray_request().")
    total = sum(_accelerators(dict(b)) for b in bundles)
    strategy = "STRICT_PACK" if per_node is not None and total <= per_node else "PACK"
    return GangPlan(tuple(dict(b) for b in bundles), strategy, str(dcs.pop()))


def worker_options(bundle: dict[str, float]) -> dict[str, Any]:
    """Actor options that consume exactly one bundle."""
    resources = {k: v for k, v in bundle.items() if k not in ("CPU", "GPU", "memory")}
    opts: dict[str, Any] = {"num_cpus": bundle.get("CPU", 0.0), "resources": resources}
    if bundle.get("GPU"):
        opts["num_gpus"] = bundle["GPU"]
    return opts


def check_one_dc(nodes: dict[int, str], node_resources: dict[str, dict[str, float]],
                 want: str) -> None:
    """Raise GangError unless every worker's node advertises ``dc:<want>``."""
    where = {rank: dc_of_resources(node_resources.get(node, {})) for rank, node in nodes.items()}
    if any(dc != want for dc in where.values()):
        raise GangError(f"Gang left data center {want!r}: workers on {where!r}. "
                        "To fix: every bundle must pin dc:<id>; check the node tags.", nodes=where)


class _Worker:
    """One data-parallel worker: holds the data, computes its share of each step's gradient."""

    def __init__(self, rank: int, X: np.ndarray, y: np.ndarray, force: str) -> None:
        import ray

        from jobs.backend import select_backend

        self.rank = rank
        self.backend = select_backend(force=force)
        self.node = ray.get_runtime_context().get_node_id()
        self.X, self.y = self.backend.asarray(X), self.backend.asarray(y)

    def where(self) -> dict[str, Any]:
        return {"rank": self.rank, "node_id": self.node, **self.backend.metadata()}

    def grad(self, params: dict[str, np.ndarray], idx: np.ndarray) -> tuple[Any, ...]:
        from jobs.model import loss_and_grads

        b, xp = self.backend, self.backend.xp
        if len(idx) == 0:
            return 0, 0.0, 0, None
        i = b.asarray(idx)
        p = {k: b.asarray(v) for k, v in params.items()}
        loss, correct, g = loss_and_grads(xp, p, xp.take(self.X, i, axis=0), xp.take(self.y, i))
        return (len(idx), float(b.to_numpy(loss)), int(b.to_numpy(correct)),
                {k: b.to_numpy(v) for k, v in g.items()})


def train_gang(X: np.ndarray, y: np.ndarray, train_idx: np.ndarray, eval_idx: np.ndarray,
               model: ModelConfig, cfg: TrainConfig, plan: GangPlan, *, force: str = "auto",
               timeout_s: float = 120.0, log: Any = print, checkpoints: CheckpointStoreLike | None = None,
               extra: dict[str, np.ndarray] | None = None, stop_after: int | None = None) -> GangResult:
    """Place the gang, verify it is in one DC, and train; needs ``ray.init()`` done.

    As :func:`jobs.training.fit`: resumes from the latest checkpoint, writes one per epoch,
    and ``stop_after`` ends this run early (a preemption stand-in).
    """
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    pg = placement_group(list(plan.bundles), strategy=plan.strategy)
    try:
        try:
            ray.get(pg.ready(), timeout=timeout_s)
        except ray.exceptions.GetTimeoutError:
            raise GangError(f"Placement group of {len(plan.bundles)} bundles ({plan.strategy}) in "
                            f"dc {plan.dc!r} not ready after {timeout_s}s. To fix: free capacity in "
                            "that data center or ask for fewer accelerators.") from None
        Xr, yr = ray.put(X), ray.put(y)
        actor = ray.remote(_Worker)
        workers: list[Any] = [actor.options(**worker_options(b), scheduling_strategy=PlacementGroupSchedulingStrategy(
            pg, placement_group_bundle_index=i)).remote(i, Xr, yr, force)
            for i, b in enumerate(plan.bundles)]
        info = ray.get([w.where.remote() for w in workers])
        nodes = {d["rank"]: d["node_id"] for d in info}
        resources = {n["NodeID"]: n["Resources"] for n in ray.nodes() if n.get("Alive")}
        check_one_dc(nodes, resources, plan.dc)
        log(f"gang of {len(workers)} ({plan.strategy}) placed in dc {plan.dc} on "
            f"{len(set(nodes.values()))} node(s)")
        params, resumed = resume_point(checkpoints, model, cfg, len(train_idx))
        result = GangResult(params, plan, nodes, info, resumed_from=resumed)
        if resumed is not None:
            log(f"gang resumes from checkpoint epoch {resumed}")
        host = numpy_backend()
        world = len(workers)
        for epoch in range(resumed or 0, cfg.epochs):
            if stop_after is not None and len(result.history) >= stop_after:
                result.complete = False
                break
            t0 = time.perf_counter()
            perm = train_idx[epoch_permutation(cfg.seed, epoch, len(train_idx))]
            loss_sum, correct_sum = 0.0, 0
            for s in range(0, len(perm), cfg.batch_size):
                batch = perm[s:s + cfg.batch_size]
                pref = ray.put(result.params)
                parts = ray.get([w.grad.remote(pref, batch[r::world]) for r, w in enumerate(workers)])
                parts = [p for p in parts if p[0]]
                n = sum(p[0] for p in parts)
                grads = {k: sum(p[3][k] * (p[0] / n) for p in parts) for k in result.params}
                result.params = {k: np.asarray(v, np.float32) for k, v in
                                 sgd_update(np, result.params, grads, cfg.lr).items()}
                loss_sum += sum(p[1] * p[0] for p in parts)
                correct_sum += sum(p[2] for p in parts)
            n_train = len(train_idx)
            stats = EpochStats(epoch + 1, loss_sum / n_train, correct_sum / n_train,
                               accuracy(host, result.params, X, eval_idx, y), time.perf_counter() - t0)
            save_epoch(checkpoints, stats, result.params, model, cfg, len(train_idx), extra)
            result.history.append(stats)
            log(f"gang epoch {stats.epoch}/{cfg.epochs}: loss {stats.loss:.4f} "
                f"eval acc {stats.eval_accuracy:.4f} ({stats.seconds:.2f}s)")
        return result
    finally:
        remove_placement_group(pg)


def _bundles(text: str) -> list[dict[str, float]]:
    try:
        v = json.loads(text)
    except json.JSONDecodeError:
        v = None
    if not isinstance(v, list) or not all(isinstance(b, dict) for b in v):
        raise JobArgumentError("--bundles", text, "a JSON list of bundles",
                               fix='pass e.g. \'[{"GPU": 8, "CPU": 1, "dc:zhongwei": 0.001}]\'.')
    return v


def parser() -> JobArgumentParser:
    from jobs.train import parser as train_parser

    p = train_parser()
    p.prog = "jobs.gang"
    p.description = __doc__
    p.add_argument("--bundles", type=_bundles, required=True,
                   help="JSON list of bundles (RayRequest.bundles), each pinning dc:<id>")
    p.add_argument("--per-node", type=positive_int("--per-node"), default=None,
                   help="accelerators per node; STRICT_PACK when all bundles fit one node")
    p.add_argument("--timeout", type=positive_int("--timeout"), default=120,
                   help="seconds to wait for the placement group")
    return p


def body(args: argparse.Namespace, ctx: JobContext) -> dict[str, Any]:
    import ray

    plan = plan_gang(args.bundles, args.per_node)
    data = load_labelled(ctx.stores.datasets, args.dataset)
    model = ModelConfig(len(data.features), max(int(data.y.max()) + 1, 2), args.hidden)
    cfg = TrainConfig(args.epochs, args.batch_size, args.lr, args.seed)
    if not ray.is_initialized():
        init_here()
    ckpts = RegionalCheckpoints(ctx.stores, ctx.region, checkpoint_prefix(args.model, args.run_id))
    r = train_gang(data.X, data.y, data.train_idx, data.eval_idx, model, cfg, plan,
                   force=args.backend, timeout_s=args.timeout, log=ctx.reporter.info, checkpoints=ckpts,
                   extra={"mu": data.mu, "sigma": data.sigma}, stop_after=args.stop_after)
    fallbacks = [w for w in r.workers if w["backend_fallback"]]
    for w in fallbacks:
        ctx.reporter.warning(f"gang rank {w['rank']}: ran NumPy in place of "
                             f"{w['accelerator_assigned']}: {w['backend_fallback_reason']}")
    meta = {"model": model.as_dict(), "features": data.features, "dataset": args.dataset,
            "epochs": cfg.epochs, "seed": cfg.seed, "gang": len(plan.bundles)}
    uri = None
    if r.complete:
        uri = save_model(ctx.stores, ctx.region, args.model, cfg.epochs,
                         {**r.params, "mu": data.mu, "sigma": data.sigma}, meta)
    else:
        ctx.reporter.warning(f"stopped after {len(r.history)} epochs (--stop-after); "
                             "run again to resume from the checkpoint")
    return {
        "model": args.model, "model_uri": uri, "dc": plan.dc, "strategy": plan.strategy,
        "resumed_from_epoch": r.resumed_from if r.resumed_from is not None else -1,
        "epochs_this_run": len(r.history), "complete": r.complete,
        "checkpoints": f"s3://{ctx.stores.bucket(ctx.region)}/{checkpoint_prefix(args.model, args.run_id)}",
        "workers": len(plan.bundles), "nodes": len(set(r.nodes.values())),
        "worker_backends": [w["backend"] for w in r.workers],
        "worker_fallbacks": len(fallbacks),
        "loss_per_epoch": [round(s.loss, 6) for s in r.history],
        "eval_accuracy_per_epoch": [round(s.eval_accuracy, 6) for s in r.history],
        "seconds_per_epoch": [round(s.seconds, 3) for s in r.history],
        **ctx.backend.metadata(),
    }


def main(argv: Sequence[str] | None = None, *, stores: Stores | None = None,
         probe: DeviceProbe | None = None) -> int:
    return run_job("gang", parser(), body, argv, stores=stores, probe=probe)


if __name__ == "__main__":
    sys.exit(main())
