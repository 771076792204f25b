"""A faithful local MyInvois: identity and API on one base URL, for the demo, tests and benchmarks.

    from connector_core.simulator import SimulatorConfig, create_app, run_in_thread

    with run_in_thread(SimulatorConfig(seed=7)) as sim:
        print(sim.base_url)        # http://127.0.0.1:<port>

See docs/simulator.md for the endpoints, the validation rules, rate limits and fault injection.
"""

from .app import create_app
from .config import (
    ENDPOINTS,
    FaultsConfig,
    IntermediaryAccount,
    LatencySpec,
    RateLimitConfig,
    SimulatorConfig,
    TaxpayerAccount,
    ValidationConfig,
)
from .server import RunningSimulator, run_in_thread

__all__ = [
    "ENDPOINTS",
    "FaultsConfig",
    "IntermediaryAccount",
    "LatencySpec",
    "RateLimitConfig",
    "RunningSimulator",
    "SimulatorConfig",
    "TaxpayerAccount",
    "ValidationConfig",
    "create_app",
    "run_in_thread",
]
