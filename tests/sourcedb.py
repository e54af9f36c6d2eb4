"""A small production-like source database with PII, built on the local server."""

from __future__ import annotations

import secrets

import psycopg
from django.conf import settings
from psycopg import sql

POLICY = """\
tables:
  users:
    email: {fake: email}
    first_name: {fake: first_name}
    last_name: {fake: last_name}
    phone: null
    notes: {keep: "free text reviewed, no PII"}
    profile: {json_drop: [ip, iban]}
  invitations:
    invitee_email: {fake: email}   # same input, same output as users.email
  sessions: truncate
  events:
    kind: {keep: "an enum of event kinds"}
    payload: {json_mask: {ip: {fake: ip}}}
"""

SCHEMA = """
CREATE TABLE users (
    id bigserial PRIMARY KEY,
    email text NOT NULL UNIQUE,
    first_name text,
    last_name text,
    phone text,
    notes text,
    profile jsonb,
    created_at timestamptz NOT NULL
);
CREATE TABLE invitations (
    id serial PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES users(id),
    invitee_email text NOT NULL
);
CREATE TABLE sessions (
    id serial PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES users(id),
    token text NOT NULL
);
CREATE TABLE events (
    id bigserial PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES users(id),
    kind text NOT NULL,
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE INDEX events_user_idx ON events (user_id);
CREATE INDEX events_created_idx ON events (created_at);
CREATE VIEW user_emails AS SELECT id, email FROM users;
"""

# Deterministic rows: the same database every time.
DATA = """
INSERT INTO users (email, first_name, last_name, phone, notes, profile, created_at)
SELECT
    'Customer' || i || '@Example.COM',
    (ARRAY['Amélie','Bruno','Chloé','Daniel','Élodie'])[1 + i % 5],
    'Surname' || i,
    '+33 6 12 ' || lpad((i % 100)::text, 2, '0') || ' ' || lpad((i % 97)::text, 2, '0'),
    'prefers the blue plan',
    jsonb_build_object('ip', '10.1.' || (i % 250) || '.' || (i % 200),
                       'iban', 'FR7630006000011234567890189', 'plan', 'pro'),
    timestamptz '2026-01-01' + i * interval '1 minute'
FROM generate_series(1, {users}) AS i;
INSERT INTO invitations (user_id, invitee_email)
SELECT i, '  customer' || i || '@example.com ' FROM generate_series(1, {users}, 4) AS i;
INSERT INTO sessions (user_id, token)
SELECT i, md5('session' || i) FROM generate_series(1, {users}, 3) AS i;
INSERT INTO events (user_id, kind, payload, created_at)
SELECT 1 + i % {users}, (ARRAY['view','order','refund'])[1 + i % 3],
       jsonb_build_object('ip', '192.168.' || (i % 200) || '.' || (i % 250), 'path', '/orders'),
       timestamptz '2026-02-01' + i * interval '1 second'
FROM generate_series(1, {events}) AS i;
"""


def server_conninfo(dbname: str = "postgres") -> str:
    db = settings.DATABASES["default"]
    return psycopg.conninfo.make_conninfo(
        host=db["HOST"], port=str(db["PORT"] or 5432), user=db["USER"], dbname=dbname
    )


def create_source(*, users: int = 400, events: int = 3000) -> str:
    name = f"fixproof_src_{secrets.token_hex(4)}"
    with psycopg.connect(server_conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    with psycopg.connect(server_conninfo(name), autocommit=True) as conn:
        conn.execute(SCHEMA)
        conn.execute(DATA.format(users=users, events=events))
        conn.execute("ANALYZE")
    return name


def drop_source(name: str) -> None:
    with psycopg.connect(server_conninfo(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def take_snapshot(source):
    """Request a snapshot of `source` and run it here, as a worker would."""
    from perfruns.services import snapshots

    snapshot = snapshots.snapshot_request(source=source, actor=None)
    return snapshots.snapshot_run(snapshot_id=snapshot.pk)


def source_saver(name: str, dsn_env: str):
    """save(policy_yaml): the dump source `name`, its DSN in $`dsn_env`, with that policy."""
    from perfruns.services import sources

    def save(policy: str):
        source, _ = sources.source_save(name=name, dsn_env=dsn_env, policy_yaml=policy)
        return source

    return save


def dump_text(path: str) -> str:
    """A dump as the SQL pg_restore would run (`pg_restore -f -`): what a search for
    leaked values reads."""
    import subprocess

    from perfruns.pipeline.pgtools import find_binary

    return subprocess.run(
        [find_binary("pg_restore"), "-f", "-", path],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
