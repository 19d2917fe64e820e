"""The network simulator: real traces replayed through the same ``place()`` policies.

Modules: :mod:`.traces` (loaders), :mod:`.workload` (load scaling, real-time demand),
:mod:`.engine` (the discrete-event simulation of one policy), :mod:`.compare` (all
policies, in parallel), :mod:`.report` (Markdown and plots).
"""

from ray_cluster.simulator.compare import run_policies
from ray_cluster.simulator.engine import PolicyResult, simulate
from ray_cluster.simulator.traces import TraceSet, load_traces
from ray_cluster.simulator.workload import LatencyModel, LoadScaling, Workload, build_workload

__all__ = [
    "PolicyResult", "simulate", "run_policies", "TraceSet", "load_traces", "LatencyModel",
    "LoadScaling", "Workload", "build_workload",
]
