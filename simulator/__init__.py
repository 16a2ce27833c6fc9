"""The simulator: a synthetic Thai school system that delivers under the contract, with its truth.

`simulate(config, out)` writes OUT/deliveries/<delivery_id>/..., OUT/truth/... and OUT/summary.json
and returns a `SimulationSummary`. Nothing runs at import time. See PROCESS.md for the process.
"""

from __future__ import annotations

from simulator.api import SimulationSummary, simulate
from simulator.config import FaultConfig, ProcessConfig, SimulationConfig, WorldConfig

__all__ = ["FaultConfig", "ProcessConfig", "SimulationConfig", "SimulationSummary", "WorldConfig", "simulate"]
