"""``westflow render {kuberay,launcher} --out DIR``: production manifests, one file per Ray cluster.

``kuberay`` also writes ``westflow-dispatcher.yaml``: the dispatcher's cluster config (a ConfigMap naming each
cluster's Jobs API Service and token variable) and a Deployment stub of the code location that runs it
(docs/federation.md). ``launcher`` writes Ray cluster-launcher YAML.
"""

from __future__ import annotations

import argparse

from ray_cluster.manifests import render_kuberay, render_launcher
from westflow.config import CONFIG_DIR, load_network
from westflow.errors import SpecError
from westflow_cli.options import out_dir, writable_dir

_RENDERERS = {"kuberay": render_kuberay, "launcher": render_launcher}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("render", help="write KubeRay YAML (and the dispatcher's config) or cluster-launcher YAML "
                                      "per named Ray cluster")
    p.add_argument("kind", choices=sorted(_RENDERERS))
    p.add_argument("--out", required=True, type=out_dir(), help="output directory")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    network = load_network(args.config_dir or CONFIG_DIR)
    out = writable_dir("--out", args.out)
    try:
        paths = _RENDERERS[args.kind](network, out)
    except OSError as exc:  # e.g. a directory where a manifest's file should go
        raise SpecError("--out", str(out), f"a directory westflow can write into ({exc.strerror or exc})",
                        problem="Cannot write") from None
    for path in paths:
        print(path)
    return 0
