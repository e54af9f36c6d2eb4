"""The models of perfruns, one module per family; every model is importable from here.

jobs           the abstract Job four of them share (status, stage, heartbeat...)
sources        dump sources, snapshots, review environments, restores
runs           scenarios, perf runs and what they measured, confirmed changes, A/B/A
proofs         the verification criteria of actions and each run's judgement
notifications  teams' webhooks, deliveries made, workers alive
"""

from .jobs import Job, SourceConfigError
from .notifications import NotificationSent, Webhook, WebhookKind, WorkerSeen
from .proofs import (
    CriterionComparison,
    CriterionMetric,
    Verification,
    VerificationCriterion,
    VerificationOutcome,
    VerificationState,
)
from .runs import (
    ABA_ROLES,
    LOAD_SHAPE_FIELDS,
    VERSION_PLACEHOLDER,
    Artifact,
    ChangeState,
    ComparisonStatus,
    ComparisonVerdict,
    EndpointSample,
    EndpointStat,
    FailureGroup,
    PerfRun,
    RegressionIncident,
    RunStatus,
    RunTrigger,
    Sample,
    Scenario,
    ShapeKind,
    VersionComparison,
)
from .sources import (
    DumpSource,
    EnvironmentKind,
    Restore,
    RestoreStatus,
    ReviewEnvironment,
    Snapshot,
    SnapshotStatus,
)

__all__ = [
    "ABA_ROLES",
    "LOAD_SHAPE_FIELDS",
    "VERSION_PLACEHOLDER",
    "Artifact",
    "ChangeState",
    "ComparisonStatus",
    "ComparisonVerdict",
    "CriterionComparison",
    "CriterionMetric",
    "DumpSource",
    "EndpointSample",
    "EndpointStat",
    "EnvironmentKind",
    "FailureGroup",
    "Job",
    "NotificationSent",
    "PerfRun",
    "RegressionIncident",
    "Restore",
    "RestoreStatus",
    "ReviewEnvironment",
    "RunStatus",
    "RunTrigger",
    "Sample",
    "Scenario",
    "ShapeKind",
    "Snapshot",
    "SnapshotStatus",
    "SourceConfigError",
    "Verification",
    "VerificationCriterion",
    "VerificationOutcome",
    "VerificationState",
    "VersionComparison",
    "Webhook",
    "WebhookKind",
    "WorkerSeen",
]
