"""Load tests with Locust, run as a subprocess, and what their results mean.

Plain library code, no models: command lines and generated locustfiles (command), the
files Locust writes (results), failures by cause (failures), steps and breaking points
(analysis), and the memory of process trees from /proc (memory).
"""

from .analysis import (
    SPAWN_BURST_S,
    BreakingPoint,
    StepStats,
    breaking_point,
    steps_from_history,
)
from .command import LoadShape, LocustPlan, check_locustfile, locust_plan
from .failures import FailureCause, failure_cause, group_failures
from .memory import MemorySample, MemorySampler, TreeMemory, process_tree, tree_memory
from .results import (
    EndpointResult,
    FailureGroup,
    HistoryRow,
    iter_history,
    load_generator_saturated,
    read_failures,
    read_final,
)

__all__ = [
    "SPAWN_BURST_S",
    "BreakingPoint",
    "EndpointResult",
    "FailureCause",
    "FailureGroup",
    "HistoryRow",
    "LoadShape",
    "LocustPlan",
    "MemorySample",
    "MemorySampler",
    "StepStats",
    "TreeMemory",
    "breaking_point",
    "check_locustfile",
    "failure_cause",
    "group_failures",
    "iter_history",
    "load_generator_saturated",
    "locust_plan",
    "process_tree",
    "read_failures",
    "read_final",
    "steps_from_history",
    "tree_memory",
]
