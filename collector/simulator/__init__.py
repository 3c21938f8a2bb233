"""A fake Huawei Cloud (IAM + GaussDB(DWS)) on one loopback port, for tests, demos and benchmarks.

- :mod:`~collector.simulator.fleet`: the seeded ground truth (accounts, projects, clusters,
  upgrade records) and the mutations that change it;
- :mod:`~collector.simulator.faults`: the switches that make the server misbehave, and its counters;
- :mod:`~collector.simulator.app`: the aiohttp application speaking the real API and signature;
- :mod:`~collector.simulator.misbehave`: what it sends instead when a fault or hostile behaviour
  is on (error pages, damaged deliveries, bodies that lie);
- :mod:`~collector.simulator.responses`: the body shapes both share (JSON, error bodies);
- :mod:`~collector.simulator.server`: running it (async context, background thread, foreground).

Only tests, ``demo`` and ``simulate`` import this package; the collector itself never does.
"""

from collector.simulator.app import build_app
from collector.simulator.faults import ClusterFailure, Faults, Mutation, Stats
from collector.simulator.fleet import Fleet, SimAccount, SimCluster, SimProject
from collector.simulator.server import SimulatorThread, describe, run_forever, serve

__all__ = [
    "ClusterFailure",
    "Faults",
    "Fleet",
    "Mutation",
    "SimAccount",
    "SimCluster",
    "SimProject",
    "SimulatorThread",
    "Stats",
    "build_app",
    "describe",
    "run_forever",
    "serve",
]
