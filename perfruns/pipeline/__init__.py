"""The perf-run pipeline's processes: PostgreSQL tools and managed clusters, databases and
restores, snapshots, the target under test, the load and what the database says of it, and
one run's execution (clone, target, load) that measures and returns its figures.

Plain library code: functions take paths, conninfo strings, values and callbacks, never
models, so that the services, the janitor and the tests can share them.
"""
