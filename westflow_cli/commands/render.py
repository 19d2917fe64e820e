"""``westflow render {kuberay,launcher} --out DIR``: production manifests, one file per Ray cluster."""

from __future__ import annotations

import argparse
from pathlib import Path

from ray_cluster.manifests import render_kuberay, render_launcher
from westflow.config import CONFIG_DIR, load_network

_RENDERERS = {"kuberay": render_kuberay, "launcher": render_launcher}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("render", help="write KubeRay or cluster-launcher YAML per named Ray cluster")
    p.add_argument("kind", choices=sorted(_RENDERERS))
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    network = load_network(args.config_dir or CONFIG_DIR)
    for path in _RENDERERS[args.kind](network, Path(args.out)):
        print(path)
    return 0
