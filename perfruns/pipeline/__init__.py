"""The perf-run pipeline's low-level parts: PostgreSQL tools, managed clusters, restores.

Plain library code: functions take paths, conninfo strings and callbacks, never models, so
the Celery tasks and the janitor can share them and the tests can drive them directly.
"""
