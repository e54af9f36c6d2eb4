"""The writes of perfruns, one module per concern. Each row imports only rows above it
(import-linter holds it: the contract in pyproject.toml); modules of one row do not import
each other.

    common, queue           the refusal a person reads, names, worker ids, error text;
                            Celery tasks sent by name after commit
    jobs, sources,          claim, stage, cancel and finish of the four jobs; dump
    environments,           sources; review environments (managed clusters, admin
    notifications           connections); team webhooks, each event sent once
    janitor, scenarios,     what a killed worker left; scenarios and their weekly
    run_comparison,         schedules; two runs compared (reads their kept files);
    recording, reminders    what a run measured, into its rows; the daily digests of
                            actions due soon or overdue
    snapshots, restores,    anonymized snapshots; restores into an environment; the
    proofs, trends,         proofs actions ask for; the weekly series and the regressions
    judging                 it confirms; a measured run's thresholds and baseline verdict
    runs                    a perf run end to end: claim, measure, record, judge, prove
    version_comparisons     A/B/A: version B against version A, run back to back
"""
