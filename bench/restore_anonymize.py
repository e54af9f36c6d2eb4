#!/usr/bin/env python
"""Restore + anonymize vs plain pg_restore, on the same dump, in the same run.

    .venv/bin/python bench/restore_anonymize.py [--events 2000000] [--rounds 3]

Builds a deterministic sample database on the local PostgreSQL (a users table
with PII, an events table with three indexes and a jsonb column holding IPs),
dumps it with pg_dump -Fc, then, in one throw-away cluster, alternates:

- baseline: `pg_restore -j2` of the dump into an empty database;
- Fixproof: the snapshot pipeline's restore with masking between the data and
  post-data sections (perfruns.pipeline.snapshot.restore_masked).

Prints whether the native masking helpers (`make native`) are installed, each round,
the median of each side, and last the line
`ratio=X.XX dead_tuples=N survivors=N distinct_kept=yes|no` (Fixproof / baseline;
dead tuples left in the masked tables; masked first and last names, phones' digits
and e-mails equal to any original of their column; whether each masked column kept
its number of distinct values). Not part of the test suite: timings on a shared machine are
only meaningful as a ratio measured side by side.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fixproof.settings")

import django  # noqa: E402

django.setup()

import psycopg  # noqa: E402
from django.conf import settings  # noqa: E402
from psycopg import sql  # noqa: E402

from perfruns.masking.functions import NATIVE_AVAILABLE  # noqa: E402
from perfruns.masking.policy import parse_policy  # noqa: E402
from perfruns.masking.schema import introspect  # noqa: E402
from perfruns.pipeline.cluster import ManagedCluster  # noqa: E402
from perfruns.pipeline.databases import create_database, drop_database  # noqa: E402
from perfruns.pipeline.pgtools import find_binary, run  # noqa: E402
from perfruns.pipeline.snapshot import dead_tuples, restore_masked  # noqa: E402
from perfruns.services.environments import cluster_os_user  # noqa: E402

SOURCE = "fixproof_bench_source"
USERS = 100_000
KEY = b"bench-masking-key-0123456789"
POLICY = """
tables:
  users:
    email: {fake: email}
    first_name: {fake: first_name}
    last_name: {fake: last_name}
    phone: {fake: phone}
  events:
    kind: {keep: "an enum of event kinds"}
    payload: {json_mask: {ip: {fake: ip}}}
"""

BUILD = """
CREATE TABLE users (
    id bigint PRIMARY KEY,
    email text NOT NULL UNIQUE,
    first_name text NOT NULL,
    last_name text NOT NULL,
    phone text,
    created_at timestamptz NOT NULL
);
INSERT INTO users
SELECT i, 'user' || i || '@example.com',
       (ARRAY['Amélie','Bruno','Chloé','Daniel','Élodie','Farid'])[1 + i % 6],
       'Name' || (i % 5000), '+33 6 ' || lpad((i % 100000000)::text, 8, '0'),
       timestamptz '2025-01-01' + i * interval '1 minute'
FROM generate_series(1, {users}) AS i;
CREATE TABLE events (
    id bigint PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES users (id),
    kind text NOT NULL,
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL
);
INSERT INTO events
SELECT i, 1 + (i::bigint * 7919) % {users}, (ARRAY['view','order','refund','login'])[1 + i % 4],
       jsonb_build_object('ip', '10.' || (i % 250) || '.' || ((i / 250) % 250) || '.'
                          || ((i / 62500) % 250), 'path', '/orders/' || (i % 1000)),
       timestamptz '2026-01-01' + i * interval '1 second'
FROM generate_series(1, {events}) AS i;
CREATE INDEX events_user_idx ON events (user_id);
CREATE INDEX events_created_idx ON events (created_at);
"""


# Columns whose originals are looked for in the masked copy (phones: reported apart,
# since a permutation of the numbers may give one user another user's real number).
MEASURED = ("first_name", "last_name", "email", "phone")


def server(dbname: str) -> str:
    db = settings.DATABASES["default"]
    return psycopg.conninfo.make_conninfo(
        host=db["HOST"], port=str(db["PORT"] or 5432), user=db["USER"], dbname=dbname
    )


def build_source(events: int) -> None:
    """Build the sample once; rebuild when its size differs."""
    with psycopg.connect(server("postgres"), autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [SOURCE]).fetchone()
    if exists:
        with psycopg.connect(server(SOURCE)) as conn:
            built = conn.execute("SELECT to_regclass('events') IS NOT NULL").fetchone()[0]
            count = conn.execute("SELECT count(*) FROM events").fetchone()[0] if built else -1
        if count == events:
            return
        drop_database(server("postgres"), SOURCE)
    print(f"building {SOURCE}: {USERS} users, {events} events ...", flush=True)
    create_database(server("postgres"), SOURCE)
    try:
        with psycopg.connect(server(SOURCE), autocommit=True) as conn:
            conn.execute(BUILD.format(users=USERS, events=events))
            conn.execute("VACUUM ANALYZE")
    except BaseException:
        drop_database(server("postgres"), SOURCE)
        raise


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    build_source(args.events)
    work = Path(tempfile.mkdtemp(prefix="fixproof-bench-", dir="/tmp"))
    work.chmod(0o755)
    dump = work / "source.dump"
    run(
        [find_binary("pg_dump"), "--format=custom", f"--file={dump}", server(SOURCE)],
        timeout=3600,
    )
    with psycopg.connect(server(SOURCE)) as conn:
        schema = introspect(conn)
        originals = {
            column: [row[0] for row in conn.execute(f"SELECT DISTINCT lower({column}) FROM users")]
            for column in MEASURED
        }
    policy = parse_policy(POLICY)
    # The same kind of throw-away cluster the snapshot pipeline uses, for both sides.
    cluster = ManagedCluster(work / "cluster", os_user=cluster_os_user())
    cluster.initialize(shared_buffers="256MB", work_mem="64MB", max_connections=20, durable=False)
    cluster.start()
    admin = cluster.conninfo("postgres")
    with psycopg.connect(admin) as conn:
        native = conn.execute(NATIVE_AVAILABLE).fetchone()[0]
    print(f"native masking helpers (make native): {'yes' if native else 'no, SQL only'}")
    plain_times: list[float] = []
    ours_times: list[float] = []
    dead = 0
    survivors = 0
    distinct_kept = True
    try:
        for round_no in range(1, args.rounds + 1):
            create_database(admin, "plain")
            plain = timed(
                lambda: run(
                    [
                        find_binary("pg_restore"),
                        "-j2",
                        "--no-owner",
                        "--no-privileges",
                        f"--dbname={cluster.conninfo('plain')}",
                        str(dump),
                    ],
                    timeout=3600,
                )
            )
            drop_database(admin, "plain")
            create_database(admin, "masked")
            ours = timed(
                lambda: restore_masked(
                    dump_path=dump,
                    conninfo=cluster.conninfo("masked"),
                    policy=policy,
                    schema=schema,
                    key=KEY,
                    jobs=2,
                    timeout=3600,
                )
            )
            with psycopg.connect(cluster.conninfo("masked"), autocommit=True) as conn:
                dead = max(dead, dead_tuples(conn))
                leaked = conn.execute(
                    sql.SQL("SELECT count(*) FROM users WHERE email LIKE '%@example.com'")
                ).fetchone()[0]
                for column, values in originals.items():
                    found, distinct = conn.execute(
                        f"SELECT count(*) FILTER (WHERE lower({column}) = ANY(%s)),"
                        f" count(DISTINCT lower({column})) FROM users",
                        [values],
                    ).fetchone()
                    survivors = max(survivors, found) if column != "phone" else survivors
                    phone_hits = found if column == "phone" else 0
                    distinct_kept = distinct_kept and distinct == len(values)
                    if column == "phone":
                        print(
                            f"round {round_no}: {phone_hits} masked phones are another "
                            f"user's number (a permutation of {len(values)} in 10^8)",
                            flush=True,
                        )
            drop_database(admin, "masked")
            if leaked:
                raise SystemExit(f"round {round_no}: {leaked} e-mails were not masked")
            plain_times.append(plain)
            ours_times.append(ours)
            print(
                f"round {round_no}: pg_restore -j2 {plain:.2f} s, "
                f"restore + anonymize {ours:.2f} s, ratio {ours / plain:.2f}",
                flush=True,
            )
    finally:
        cluster.destroy()
        shutil.rmtree(work, ignore_errors=True)
    plain_median = statistics.median(plain_times)
    ours_median = statistics.median(ours_times)
    print(f"median: pg_restore -j2 {plain_median:.2f} s, restore + anonymize {ours_median:.2f} s")
    print(
        f"ratio={ours_median / plain_median:.2f} dead_tuples={dead} survivors={survivors}"
        f" distinct_kept={'yes' if distinct_kept else 'no'}"
    )


if __name__ == "__main__":
    main()
