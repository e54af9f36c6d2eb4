"""Create and fill the demo target's database: the one named by $DATABASE_URL.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/demo \\
        python examples/demo/seed.py --users 2000 --events 200000

Drops and recreates the `users` and `events` tables (schema.sql), fills them set-based
with generate_series, then ANALYZEs them. The rows are deterministic: the same counts
give the same names, emails, phones, kinds, paths and IPs every time. Timestamps are
relative to the hour of seeding, so that "the last 7 days" always has events: users
signed up over the two years before it, events happened over the year before it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import dburl
import psycopg

SCHEMA_FILE = Path(__file__).with_name("schema.sql")
DEFAULT_USERS = 2000
DEFAULT_EVENTS = 100_000

FIRST_NAMES = (
    "Aiden Amelia Ana Arjun Beatriz Carlos Chen Chloe Daniel David Elena Emma Fatima Felix "
    "Grace Hana Hugo Ines Isaac Jamal Julia Kenji Lars Layla Lucas Maria Mateo Mei Mohamed "
    "Nadia Noah Olivia Omar Priya Rafael Sara Sofia Tariq Theo Yara Yusuf Zoe"
).split()
LAST_NAMES = (
    "Adeyemi Alvarez Andersen Bakker Brown Chen Costa Dubois Fischer Garcia Haddad Hansen "
    "Ivanova Jensen Kim Kowalski Lefebvre Lopez Martin Mendes Moreau Muller Nakamura Nguyen "
    "Novak Okafor Olsen Patel Petrov Rossi Santos Schmidt Silva Singh Smith Tanaka Torres "
    "Wagner Wang Weber Williams Yilmaz"
).split()
AREA_CODES = ["202", "212", "305", "312", "415", "503", "617", "702", "713", "808"]

# Three cheap, deterministic hashes of the row number (Knuth-style multiplicative
# hashing, low bits dropped): the data looks random but is the same on every run.
HASHES = """
    ((i * 2654435761) %% 4294967296) >> 12 AS h1,
    ((i * 2246822519 + 3266489917) %% 4294967296) >> 12 AS h2,
    ((i * 3266489917 + 668265263) %% 4294967296) >> 12 AS h3
"""

USERS_SQL = f"""
INSERT INTO users (id, email, first_name, last_name, phone, created_at)
SELECT
    i,
    'user' || i || '@example.com',
    (%(first_names)s::text[])[1 + h1 %% cardinality(%(first_names)s::text[])],
    (%(last_names)s::text[])[1 + h2 %% cardinality(%(last_names)s::text[])],
    '+1-' || (%(area_codes)s::text[])[1 + h3 %% cardinality(%(area_codes)s::text[])]
        || '-555-' || lpad((h1 %% 10000)::text, 4, '0'),
    date_trunc('hour', now())
        - (%(users)s - i) * (interval '730 days' / %(users)s)
        - (h3 %% 3600) * interval '1 second'
FROM (SELECT i, {HASHES} FROM generate_series(1, %(users)s::bigint) AS i) AS numbered
"""

# Kinds by share: page_view 55 %, search 15 %, add_to_cart 10 %, login 7 %, checkout 5 %,
# logout 5 %, purchase 3 %. Each user browses from a few addresses of its own.
EVENTS_SQL = f"""
INSERT INTO events (id, user_id, kind, payload, created_at)
SELECT
    i,
    user_id,
    kind,
    jsonb_build_object(
        'ip', '10.' || (user_id / 256 %% 256) || '.' || (user_id %% 256) || '.' || (1 + h3 %% 4),
        'path', CASE kind
            WHEN 'page_view' THEN (ARRAY['/', '/products/' || (h3 %% 500), '/categories/'
                || (ARRAY['shoes', 'coats', 'bags', 'hats', 'sale'])[1 + h3 %% 5],
                '/account'])[1 + (h3 >> 4) %% 4]
            WHEN 'search' THEN '/search'
            WHEN 'add_to_cart' THEN '/cart/items'
            WHEN 'login' THEN '/login'
            WHEN 'logout' THEN '/logout'
            ELSE '/checkout'
        END
    ),
    date_trunc('hour', now())
        - (%(events)s - i) * (interval '365 days' / %(events)s)
        - (h3 %% 600) * interval '1 second'
FROM (
    SELECT
        i,
        h3,
        1 + h1 %% %(users)s AS user_id,
        CASE
            WHEN h2 %% 100 < 55 THEN 'page_view'
            WHEN h2 %% 100 < 70 THEN 'search'
            WHEN h2 %% 100 < 80 THEN 'add_to_cart'
            WHEN h2 %% 100 < 87 THEN 'login'
            WHEN h2 %% 100 < 92 THEN 'checkout'
            WHEN h2 %% 100 < 97 THEN 'logout'
            ELSE 'purchase'
        END AS kind
    FROM (SELECT i, {HASHES} FROM generate_series(1, %(events)s::bigint) AS i) AS numbered
) AS drawn
"""

SEQUENCES_SQL = """
SELECT setval(pg_get_serial_sequence('users', 'id'), greatest(%(users)s, 1), %(users)s > 0),
       setval(pg_get_serial_sequence('events', 'id'), greatest(%(events)s, 1), %(events)s > 0)
"""


def seed(conninfo: str, *, users: int, events: int) -> None:
    params = {
        "users": users,
        "events": events,
        "first_names": FIRST_NAMES,
        "last_names": LAST_NAMES,
        "area_codes": AREA_CODES,
    }
    with psycopg.connect(conninfo, autocommit=True, application_name="fixproof-demo-seed") as conn:
        with conn.transaction():
            conn.execute(SCHEMA_FILE.read_text())
            conn.execute(USERS_SQL, params)
            conn.execute(EVENTS_SQL, params)
            conn.execute(SEQUENCES_SQL, params)
        conn.execute("ANALYZE users")
        conn.execute("ANALYZE events")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=DEFAULT_USERS, help="default %(default)s")
    parser.add_argument("--events", type=int, default=DEFAULT_EVENTS, help="default %(default)s")
    args = parser.parse_args(argv)
    if args.users < 1:
        parser.error("--users must be at least 1")
    if args.events < 0:
        parser.error("--events must not be negative")
    try:
        conninfo = dburl.required()
    except (dburl.MissingDatabaseUrl, dburl.InvalidDatabaseUrl) as exc:
        print(f"seed.py: {exc}", file=sys.stderr)
        return 2
    started = time.monotonic()
    try:
        seed(conninfo, users=args.users, events=args.events)
    except psycopg.Error as exc:
        print(f"seed.py: seeding failed: {dburl.describe(exc, conninfo)}", file=sys.stderr)
        return 1
    took = time.monotonic() - started
    print(f"seeded {args.users} users and {args.events} events in {took:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
