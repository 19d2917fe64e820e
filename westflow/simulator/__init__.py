"""The network simulator: real traces replayed through the same ``place()`` policies.

Modules: :mod:`.traces` (loaders), :mod:`.workload` (load scaling, real-time demand),
:mod:`.engine` (the discrete-event simulation of one policy), :mod:`.compare` (all
policies, in parallel), :mod:`.report` (Markdown and plots).
"""

from westflow.simulator.compare import run_policies
from westflow.simulator.demand import LatencyModel, LoadScaling, Workload, build_workload
from westflow.simulator.engine import PolicyResult, simulate
from westflow.simulator.traces import TraceSet, load_traces

__all__ = [
    "PolicyResult", "simulate", "run_policies", "TraceSet", "load_traces", "LatencyModel",
    "LoadScaling", "Workload", "build_workload",
]
