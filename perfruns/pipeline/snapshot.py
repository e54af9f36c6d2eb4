"""Produce an anonymized snapshot of a source database (DESIGN.md step 2).

    check the source   policy against its schema, fail-closed PII scan
    dump               pg_dump -Fc of the source, read-only, into a private folder
    mask               restore into a throw-away cluster: pre-data, data, then one
                       rewriting ALTER per masked table (in parallel), then post-data
                       (indexes and foreign keys built once, on masked data)
    verify             no sampled original value left, no PII in unlisted columns,
                       no dead tuples
    write              pg_dump -Fc of the masked database, owner-only, with its sha256

The raw dump and the scratch cluster are removed as soon as masking is done, and
on every failure.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from perfruns.masking import sql as masking_sql
from perfruns.masking.pii import report as pii_report
from perfruns.masking.pii import scan
from perfruns.masking.policy import Policy, Strategy, parse_policy, policy_hash, validate
from perfruns.masking.schema import Schema, TableInfo, introspect

from .cluster import ManagedCluster
from .pgtools import find_binary, redact, run
from .restore import _split_password, create_database, restore_dump

CONNECT_TIMEOUT = 10
# Original values sampled per masked column, looked for in the masked copy.
SAMPLES_PER_COLUMN = 50
HASH_CHUNK = 1 << 20


class SourceUnreachable(Exception):
    """The source could not be read; the message never holds its DSN or password."""


class PolicyInvalid(Exception):
    def __init__(self, problems: list[str]):
        self.report = {"policy_errors": problems, "text": "\n".join(problems)}
        super().__init__(
            f"The masking policy does not fit the source ({len(problems)} problem"
            f"{'s' if len(problems) != 1 else ''}): " + "; ".join(problems)
        )


class PiiRejected(Exception):
    def __init__(self, findings: list[Any]):
        text = pii_report(findings)
        self.report = {"findings": [f.as_dict() for f in findings], "text": text}
        super().__init__(
            f"Possible PII in {len(findings)} column(s) the policy does not cover; nothing "
            "was written. Mask them, or 'keep' them with a reason."
        )


class VerificationFailed(Exception):
    def __init__(self, checks: list[dict[str, Any]]):
        self.report = {"checks": checks}
        failed = [c for c in checks if not c["ok"]]
        super().__init__(
            "The masked copy failed verification: "
            + "; ".join(f"{c['name']}: {c['detail']}" for c in failed)
        )


@dataclass
class SnapshotResult:
    path: Path
    sha256: str
    size: int
    table_rows: dict[str, int]
    policy_hash: str
    report: dict[str, Any] = field(default_factory=dict)


def connect_source(dsn: str) -> psycopg.Connection:
    """A read-only session on the source: a role without write is enough."""
    try:
        conn = psycopg.connect(dsn, connect_timeout=CONNECT_TIMEOUT, autocommit=True)
    except psycopg.OperationalError as exc:
        text = str(exc)
        if "password authentication failed" in text or "no password supplied" in text:
            reason = "the source refused the password (wrong password for its role)"
        elif "does not exist" in text:
            reason = redact(text.strip().splitlines()[-1])
        else:
            reason = "the source is unreachable (" + redact(text.strip().splitlines()[-1]) + ")"
        raise SourceUnreachable(f"Cannot connect to the source: {reason}.") from None
    except psycopg.ProgrammingError:
        raise SourceUnreachable("The source's DSN is not a valid PostgreSQL DSN.") from None
    conn.execute("SET default_transaction_read_only = on")
    return conn


# ---------------------------------------------------------------- checking


def _sample_targets(
    policy: Policy, schema: Schema
) -> list[tuple[TableInfo, str, str | None, Strategy]]:
    """(table, column, json key or None, rule) whose original values must not survive."""
    targets = []
    for name, rules in policy.tables.items():
        info = schema.tables.get(name)
        if info is None or rules.truncate:
            continue
        for column, rule in rules.columns.items():
            if rule.kind in ("keep", "date_shift", "constant"):
                continue
            if rule.kind == "json_drop":
                targets += [(info, column, key, rule) for key in rule.keys if "." not in key]
            elif rule.kind == "json_mask":
                targets += [
                    (info, column, key, sub)
                    for key, sub in rule.fields
                    if sub.kind not in ("keep", "constant", "date_shift")
                ]
            else:
                targets.append((info, column, None, rule))
    return targets


def _value_expr(column: str, key: str | None) -> sql.Composable:
    if key is None:
        return sql.SQL("{}::text").format(sql.Identifier(column))
    return sql.SQL("{} ->> {}").format(sql.Identifier(column), sql.Literal(key))


def sample_originals(
    conn: psycopg.Connection, *, policy: Policy, schema: Schema
) -> list[dict[str, Any]]:
    samples = []
    for info, column, key, rule in _sample_targets(policy, schema):
        expr = _value_expr(column, key)
        rows = conn.execute(
            sql.SQL("SELECT DISTINCT {e} FROM {t} WHERE {e} IS NOT NULL LIMIT {n}").format(
                e=expr, t=info.identifier, n=sql.Literal(SAMPLES_PER_COLUMN)
            )
        ).fetchall()
        values = [r[0] for r in rows]
        if rule.kind == "mask":
            # A value no longer than what mask keeps is legitimately unchanged.
            values = [v for v in values if len(v) > rule.first + rule.last]
        if values:
            samples.append(
                {"table": info.qualified, "column": column, "key": key, "values": values}
            )
    return samples


def check_source(*, dsn: str, policy_text: str) -> tuple[Policy, Schema, list[dict[str, Any]]]:
    policy = parse_policy(policy_text)
    with connect_source(dsn) as conn:
        schema = introspect(conn)
        problems = validate(policy, schema)
        if problems:
            raise PolicyInvalid(problems)
        findings = scan(conn, schema=schema, policy=policy)
        if findings:
            raise PiiRejected(findings)
        samples = sample_originals(conn, policy=policy, schema=schema)
    return policy, schema, samples


# ---------------------------------------------------------------- masking


def _descendants(schema: Schema, roots: set[str]) -> set[str]:
    seen, queue = set(roots), list(roots)
    while queue:
        for child, _fk in schema.children_of(queue.pop()):
            if child.qualified not in seen:
                seen.add(child.qualified)
                queue.append(child.qualified)
    return seen


def masking_hook(
    *, conninfo: str, policy: Policy, schema: Schema, key: bytes, jobs: int
) -> Callable[[], None]:
    """What runs between the data and post-data sections of the restore."""
    present = [
        (rules, schema.tables[n]) for n, rules in policy.tables.items() if n in schema.tables
    ]
    rewrites = [
        (info.qualified, statement)
        for rules, info in present
        if (statement := masking_sql.table_masking_sql(table=rules, info=info)) is not None
    ]
    filtered = {info.qualified for rules, info in present if rules.where is not None}
    truncated = {info.qualified for rules, info in present if rules.truncate}
    # Tables that lose rows keep dead tuples unless rewritten: the masked ones are
    # rewritten by their ALTER anyway, the others by VACUUM FULL.
    touched = _descendants(schema, filtered | truncated) - truncated
    vacuum = sorted(touched - {name for name, _ in rewrites})

    def run_one(statement: sql.Composable) -> None:
        with psycopg.connect(conninfo, connect_timeout=CONNECT_TIMEOUT, autocommit=True) as conn:
            conn.execute(statement)

    def hook() -> None:
        with psycopg.connect(conninfo, connect_timeout=CONNECT_TIMEOUT, autocommit=True) as conn:
            conn.execute(masking_sql.functions_sql(key=key))
            try:
                for rules, info in present:
                    statement = masking_sql.filter_sql(table=rules, info=info)
                    if statement is not None:
                        conn.execute(statement)
                cleanup = masking_sql.orphan_cleanup_sql(policy=policy, schema=schema)
                if cleanup is not None:
                    conn.execute(cleanup)
                # One rewriting statement per table, tables in parallel.
                with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
                    for future in [pool.submit(run_one, stmt) for _, stmt in rewrites]:
                        future.result()
                for name in vacuum:
                    info = schema.tables[name]
                    conn.execute(sql.SQL("VACUUM (FULL) {}").format(info.identifier))
            finally:
                # The keyed functions must never reach the written dump.
                conn.execute(masking_sql.DROP_FUNCTIONS)

    return hook


def restore_masked(
    *,
    dump_path: Path,
    conninfo: str,
    policy: Policy,
    schema: Schema,
    key: bytes,
    jobs: int,
    timeout: float,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Restore a raw dump into an empty database, masked before indexes are built."""
    truncated = {
        (info.schema, info.name)
        for name, rules in policy.tables.items()
        if rules.truncate and (info := schema.tables.get(name)) is not None
    }
    restore_dump(
        dump_path=dump_path,
        conninfo=conninfo,
        jobs=jobs,
        between=masking_hook(conninfo=conninfo, policy=policy, schema=schema, key=key, jobs=jobs),
        exclude_data=truncated,
        progress=progress,
        timeout=timeout,
    )


# ---------------------------------------------------------------- verifying


def dead_tuples(conn: psycopg.Connection) -> int:
    # n_dead_tup is an estimate that a DELETE raises and only ANALYZE brings back
    # down (VACUUM FULL and a rewrite leave it as is): analyze, then read.
    conn.execute("ANALYZE")
    # Statistics reach the shared view when a backend reports them: force it.
    conn.execute("SELECT pg_stat_force_next_flush()")
    time.sleep(0.5)
    conn.execute("SELECT pg_stat_clear_snapshot()")
    row = conn.execute("SELECT coalesce(sum(n_dead_tup), 0) FROM pg_stat_user_tables").fetchone()
    return int(row[0])


def verify_masked(
    conn: psycopg.Connection, *, policy: Policy, schema: Schema, samples: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    checks: list[dict[str, Any]] = []
    for sample in samples:
        info = schema.tables[sample["table"]]
        expr = _value_expr(sample["column"], sample["key"])
        left = conn.execute(
            sql.SQL("SELECT count(*) FROM {t} WHERE {e} = ANY(%s)").format(
                t=info.identifier, e=expr
            ),
            [sample["values"]],
        ).fetchone()[0]
        where = f"{sample['table']}.{sample['column']}" + (
            f"->{sample['key']}" if sample["key"] else ""
        )
        checks.append(
            {
                "name": f"no original value in {where}",
                "ok": left == 0,
                "detail": f"{len(sample['values'])} sampled originals, {left} found",
            }
        )
    masked_schema = introspect(conn)
    findings = scan(conn, schema=masked_schema, policy=policy)
    checks.append(
        {
            "name": "no PII in unlisted columns",
            "ok": not findings,
            "detail": pii_report(findings) if findings else "none found",
        }
    )
    rows = {
        name: int(
            conn.execute(sql.SQL("SELECT count(*) FROM {}").format(info.identifier)).fetchone()[0]
        )
        for name, info in sorted(masked_schema.tables.items())
    }
    dead = dead_tuples(conn)
    checks.append(
        {"name": "no dead tuples left by masking", "ok": dead == 0, "detail": f"{dead} dead tuples"}
    )
    return checks, rows


# ---------------------------------------------------------------- writing


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def pg_dump(*, conninfo: str, target: Path, timeout: float) -> None:
    """pg_dump -Fc without owners, grants or security labels; password via environment."""
    safe, env = _split_password(conninfo)
    run(
        [
            find_binary("pg_dump"),
            "--format=custom",
            "--no-owner",
            "--no-privileges",
            "--no-security-labels",
            "--no-subscriptions",
            "--no-publications",
            f"--file={target}",
            f"--dbname={safe}",
        ],
        timeout=timeout,
        env={**os.environ, **env},
    )


def _private_dir(path: Path, mode: int) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)
    return path


def produce_snapshot(
    *,
    source_dsn: str,
    source_name: str,
    policy_text: str,
    key: bytes,
    out_dir: Path,
    work_dir: Path,
    jobs: int,
    timeout: float,
    stage: Callable[[str], None] = lambda _name: None,
    os_user: str | None = None,
) -> SnapshotResult:
    from .environment import cluster_os_user

    stage("checking the source")
    policy, schema, samples = check_source(dsn=source_dsn, policy_text=policy_text)
    deadline = time.monotonic() + timeout
    # The scratch cluster's OS user must traverse work_dir; only the raw folder
    # (readable by this process alone) holds unmasked data.
    _private_dir(work_dir, 0o711)
    raw = _private_dir(work_dir / "raw", 0o700) / "source.dump"
    cluster = ManagedCluster(work_dir / "cluster", os_user=os_user or cluster_os_user())
    try:
        stage("dumping the source")
        pg_dump(conninfo=source_dsn, target=raw, timeout=timeout)
        stage("starting a scratch cluster")
        # Thrown away after: durability is traded for speed.
        cluster.initialize(
            shared_buffers="256MB", work_mem="64MB", max_connections=20, durable=False
        )
        cluster.start()
        create_database(cluster.conninfo("postgres"), "scratch")
        scratch = cluster.conninfo("scratch")
        stage("masking")
        restore_masked(
            dump_path=raw,
            conninfo=scratch,
            policy=policy,
            schema=schema,
            key=key,
            jobs=jobs,
            timeout=max(60.0, deadline - time.monotonic()),
        )
        # Masking is done: the unmasked copy goes now, not at the end.
        shutil.rmtree(raw.parent, ignore_errors=True)
        stage("verifying")
        with psycopg.connect(scratch, connect_timeout=CONNECT_TIMEOUT, autocommit=True) as conn:
            checks, rows = verify_masked(conn, policy=policy, schema=schema, samples=samples)
        if not all(c["ok"] for c in checks):
            raise VerificationFailed(checks)
        stage("writing the dump")
        _private_dir(out_dir, 0o700)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        final = out_dir / f"{source_name}-{stamp}.dump"
        partial = final.with_suffix(".partial")
        try:
            pg_dump(
                conninfo=scratch,
                target=partial,
                timeout=max(60.0, deadline - time.monotonic()),
            )
            partial.chmod(0o600)
            with partial.open("rb") as fh:
                os.fsync(fh.fileno())
            partial.rename(final)
        finally:
            partial.unlink(missing_ok=True)
        return SnapshotResult(
            path=final,
            sha256=file_sha256(final),
            size=final.stat().st_size,
            table_rows=rows,
            policy_hash=policy_hash(policy_text),
            report={
                "checks": checks,
                "text": "\n".join(
                    f"{'ok' if c['ok'] else 'FAILED'}  {c['name']}: {c['detail']}" for c in checks
                ),
            },
        )
    finally:
        cluster.destroy()
        shutil.rmtree(work_dir, ignore_errors=True)
