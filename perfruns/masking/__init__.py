"""Anonymization of a restored production copy: policy, schema, SQL and the PII scan.

In the order the snapshot step uses them:

- ``parse_policy(text)``: PolicyError names the problem and the line.
- ``introspect(source)``: from the source, since the half-restored copy has no
  keys or foreign keys before post-data.
- ``validate(policy, schema)``: one sentence per problem, naming table.column.
- ``scan(source, schema=..., policy=...)``: fail closed when it finds anything.
- on the copy, after pre-data and data: ``functions_sql(key=...)``, every statement
  of ``plan_sql(policy=..., schema=...)``, ``DROP_FUNCTIONS``; then post-data.
"""

from __future__ import annotations

from perfruns.masking.draft import draft_policy
from perfruns.masking.functions import DROP_FUNCTIONS, functions_sql
from perfruns.masking.pii import Finding, report, scan
from perfruns.masking.policy import (
    Policy,
    PolicyError,
    Strategy,
    TablePolicy,
    parse_policy,
    policy_hash,
    validate,
)
from perfruns.masking.schema import ColumnInfo, ForeignKey, Schema, TableInfo, introspect
from perfruns.masking.sql import (
    filter_sql,
    orphan_cleanup_sql,
    plan_sql,
    table_masking_sql,
    truncate_sql,
)

__all__ = [
    "DROP_FUNCTIONS",
    "ColumnInfo",
    "Finding",
    "ForeignKey",
    "Policy",
    "PolicyError",
    "Schema",
    "Strategy",
    "TableInfo",
    "TablePolicy",
    "draft_policy",
    "filter_sql",
    "functions_sql",
    "introspect",
    "orphan_cleanup_sql",
    "parse_policy",
    "plan_sql",
    "policy_hash",
    "report",
    "scan",
    "table_masking_sql",
    "truncate_sql",
    "validate",
]
