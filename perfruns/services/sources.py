"""Dump sources: a production database to snapshot, and its masking policy."""

from __future__ import annotations

from django.db import transaction

from perfruns.masking.policy import parse_policy, policy_hash
from perfruns.models import DumpSource

from .common import PipelineRefused, check_env_name, check_name


def _check_source_fields(
    *, name: str, dsn_env: str, dsn_file: str, policy_yaml: str, retention: int | None
) -> None:
    check_name(name)
    if bool(dsn_env) == bool(dsn_file):
        raise PipelineRefused("Give either --dsn-env or --dsn-file (one of them, not both).")
    if dsn_env:
        check_env_name(dsn_env)
    if retention is not None and retention < 1:
        # 0 would silently mean the default; a negative one fails the column's CHECK.
        raise PipelineRefused("The number of snapshots kept must be at least 1.")
    # Raises PolicyError with the YAML line: the policy must parse to be saved.
    parse_policy(policy_yaml)


@transaction.atomic
def source_save(
    *,
    name: str,
    policy_yaml: str | None,
    dsn_env: str = "",
    dsn_file: str = "",
    retention: int | None = None,
) -> tuple[DumpSource, bool]:
    """Create or update a dump source by name; returns (source, created).

    `policy_yaml` None: an existing source keeps its policy, a new one starts with an empty
    policy (every snapshot is then refused until the scan finds nothing uncovered), so that
    `draft_policy` can read the source to draft one."""
    if policy_yaml is None:
        existing = DumpSource.objects.filter(name=name).first()
        policy_yaml = existing.policy_yaml if existing is not None else "tables: {}\n"
    _check_source_fields(
        name=name,
        dsn_env=dsn_env,
        dsn_file=dsn_file,
        policy_yaml=policy_yaml,
        retention=retention,
    )
    values = {
        "dsn_env": dsn_env,
        "dsn_file": dsn_file,
        "policy_yaml": policy_yaml,
        "policy_hash": policy_hash(policy_yaml),
        "retention": retention,
    }
    return DumpSource.objects.update_or_create(name=name, defaults=values)
