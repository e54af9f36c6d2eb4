"""Restores into a real managed cluster, the target the pipeline restores into."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from perfruns.pipeline import databases as databases_module
from perfruns.pipeline import split_copy as split_copy_module
from perfruns.pipeline.databases import (
    RestoreError,
    clone_database,
    create_database,
    database_exists,
    drop_database,
    drop_scratch_databases,
    list_databases,
    swap_database,
)
from perfruns.pipeline.pgtools import find_binary, run
from perfruns.pipeline.restore import restore_and_swap, restore_dump, verify_archive
from tests.managed import Server, managed_server

CUSTOMERS = 20_000
ORDERS = 30_000
AUDIT_ROWS = 2_000

SAMPLE_SCHEMA = f"""
CREATE SCHEMA billing;
CREATE TABLE customers (
    id bigint PRIMARY KEY,
    email varchar(320) NOT NULL,
    profile jsonb NOT NULL
);
CREATE INDEX customers_email_idx ON customers (email);
CREATE TABLE orders (
    id bigint PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES customers (id),
    total numeric(10, 2) NOT NULL
);
CREATE TABLE billing.audit_log (id bigserial PRIMARY KEY, message text NOT NULL);
CREATE VIEW customer_emails AS SELECT id, email FROM customers;
CREATE MATERIALIZED VIEW customer_domains AS
    SELECT split_part(email, '@', 2) AS domain, count(*) AS customers FROM customers GROUP BY 1;
INSERT INTO customers
    SELECT g, 'user' || g || '@example.com',
           jsonb_build_object('plan', CASE WHEN g % 2 = 0 THEN 'pro' ELSE 'free' END,
                              'seats', g % 7)
    FROM generate_series(1, {CUSTOMERS}) g;
INSERT INTO orders
    SELECT g, g % {CUSTOMERS} + 1, (g % 1000) / 10.0 FROM generate_series(1, {ORDERS}) g;
-- md5 text compresses badly, so the data blocks fill most of the dump file.
INSERT INTO billing.audit_log (message) SELECT md5(g::text) FROM generate_series(1, {AUDIT_ROWS}) g;
REFRESH MATERIALIZED VIEW customer_domains;
"""
MASK_EMAILS = "ALTER TABLE customers ALTER COLUMN email TYPE text USING upper(email)"


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    with managed_server() as running:
        yield running


@pytest.fixture(scope="module")
def dump(server) -> Path:
    """A -Fc dump of the sample database: a view and a materialized view over the column
    the masking rewrites, an index, a foreign key, a jsonb column, a second schema."""
    create_database(server.admin, "sample")
    with psycopg.connect(server.db("sample"), autocommit=True) as conn:
        conn.execute(SAMPLE_SCHEMA)
    path = server.folder / "sample.dump"
    run(
        [find_binary("pg_dump"), "-Fc", "-f", str(path), "--dbname", server.db("sample")],
        timeout=120,
    )
    return path


@pytest.fixture(scope="module")
def half_dump(server, dump) -> Path:
    path = server.folder / "half.dump"
    data = dump.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.fixture
def live(server) -> Iterator[str]:
    """A fresh live database name; it, its clones and its scratch copies go at teardown."""
    name = f"review_{secrets.token_hex(3)}"
    yield name
    for leftover in list_databases(server.admin, name):
        drop_database(server.admin, leftover)


def _mask(conninfo: str) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(MASK_EMAILS)


def _restore(server: Server, live: str, dump: Path, **kwargs) -> None:
    restore_and_swap(
        dump_path=dump, admin_conninfo=server.admin, live=live, jobs=2, timeout=120, **kwargs
    )


def _scratch(server: Server, live: str) -> list[str]:
    return list_databases(server.admin, f"{live}__")


def test_the_sample_view_really_blocks_the_masking_rewrite(server, dump):
    # Without the deferred views, the masking hook below would fail just like this.
    with psycopg.connect(server.db("sample")) as conn:
        with pytest.raises(psycopg.errors.FeatureNotSupported, match="used by a view or rule"):
            conn.execute(MASK_EMAILS)
        conn.rollback()


def test_a_masking_hook_can_rewrite_a_column_that_views_use(server, dump, live):
    create_database(server.admin, live)
    target = server.db(live)

    restore_dump(
        dump_path=dump, conninfo=target, jobs=2, between=lambda: _mask(target), timeout=120
    )

    assert server.one(live, "SELECT email FROM customer_emails WHERE id = 1") == "USER1@EXAMPLE.COM"
    assert (
        server.one(
            live,
            "SELECT data_type FROM information_schema.columns"
            " WHERE table_name = 'customers' AND column_name = 'email'",
        )
        == "text"
    )
    # The materialized view is filled last, from the masked data.
    assert server.one(live, "SELECT array_agg(domain) FROM customer_domains") == ["EXAMPLE.COM"]
    assert server.one(live, "SELECT count(*) FROM customers") == CUSTOMERS
    assert server.one(live, "SELECT count(*) FROM orders") == ORDERS
    assert server.one(live, "SELECT profile->>'plan' FROM customers WHERE id = 2") == "pro"
    assert server.one(live, "SELECT jsonb_typeof(profile) FROM customers WHERE id = 2") == "object"
    assert server.one(
        live, "SELECT indexdef FROM pg_indexes WHERE indexname = 'customers_email_idx'"
    )
    with psycopg.connect(target) as conn:
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute("INSERT INTO orders VALUES (%s, %s, 1)", [ORDERS + 1, CUSTOMERS + 1])


def test_a_restore_without_hook_keeps_the_data_as_dumped(server, dump, live):
    create_database(server.admin, live)

    restore_dump(dump_path=dump, conninfo=server.db(live), jobs=2, timeout=120)

    assert server.one(live, "SELECT email FROM customer_emails WHERE id = 1") == "user1@example.com"
    assert server.one(live, "SELECT array_agg(domain) FROM customer_domains") == ["example.com"]
    assert server.one(live, "SELECT count(*) FROM billing.audit_log") == AUDIT_ROWS


def test_a_table_in_exclude_data_exists_but_stays_empty(server, dump, live):
    create_database(server.admin, live)

    restore_dump(
        dump_path=dump,
        conninfo=server.db(live),
        jobs=2,
        exclude_data={("billing", "audit_log")},
        timeout=120,
    )

    assert server.one(live, "SELECT count(*) FROM billing.audit_log") == 0
    assert server.one(live, "SELECT count(*) FROM customers") == CUSTOMERS


@pytest.mark.parametrize("jobs", [1, 2])
def test_progress_counts_the_loaded_tables_up_to_the_total(server, dump, live, jobs):
    create_database(server.admin, live)
    calls: list[tuple[int, int]] = []

    restore_dump(
        dump_path=dump,
        conninfo=server.db(live),
        jobs=jobs,
        progress=lambda done, total: calls.append((done, total)),
        timeout=120,
    )

    assert calls == [(0, 3), (1, 3), (2, 3), (3, 3)]


def test_progress_leaves_out_the_excluded_tables(server, dump, live):
    create_database(server.admin, live)
    calls: list[tuple[int, int]] = []

    restore_dump(
        dump_path=dump,
        conninfo=server.db(live),
        exclude_data={("billing", "audit_log")},
        progress=lambda done, total: calls.append((done, total)),
        timeout=120,
    )

    assert calls[0] == (0, 2)
    assert calls[-1] == (2, 2)


def test_verify_archive_counts_the_entries_of_a_good_dump(dump):
    listing = run([find_binary("pg_restore"), "--list", str(dump)], timeout=30).stdout
    entries = [line for line in listing.splitlines() if line and not line.startswith(";")]

    assert verify_archive(dump) == len(entries) > 10


def test_verify_archive_refuses_a_dump_cut_in_half(half_dump):
    # The table of contents survives the cut, so listing it alone would not notice.
    run([find_binary("pg_restore"), "--list", str(half_dump)], timeout=30)

    with pytest.raises(RestoreError, match=r"^the dump file is truncated or corrupted: pg_restore"):
        verify_archive(half_dump)


def test_verify_archive_refuses_a_plain_sql_dump(server, dump):
    plain = server.folder / "plain.sql"
    run(
        [find_binary("pg_dump"), "-Fp", "-f", str(plain), "--dbname", server.db("sample")],
        timeout=120,
    )

    with pytest.raises(RestoreError, match=r"^the dump file is a plain SQL script, not a pg_dump"):
        verify_archive(plain)


def test_a_missing_dump_file_is_named(server, live, tmp_path):
    missing = tmp_path / "nowhere.dump"

    with pytest.raises(RestoreError, match=f"^the dump file {missing} does not exist$"):
        _restore(server, live, missing)

    assert _scratch(server, live) == []


def test_a_truncated_dump_fails_and_leaves_the_previous_database_serving(
    server, dump, half_dump, live
):
    _restore(server, live, dump)

    with pytest.raises(RestoreError) as caught:
        _restore(server, live, half_dump)

    assert str(caught.value).startswith(
        "the dump file is truncated or corrupted: pg_restore: error:"
    )
    assert _scratch(server, live) == []
    assert server.one(live, "SELECT count(*) FROM customers") == CUSTOMERS
    assert server.one(live, "SELECT count(*) FROM orders") == ORDERS


def test_a_truncated_dump_without_a_live_database_leaves_no_database(server, half_dump, live):
    with pytest.raises(RestoreError, match="truncated or corrupted"):
        _restore(server, live, half_dump)

    assert list_databases(server.admin, live) == []


@pytest.mark.parametrize("failure", [RuntimeError("masking failed"), KeyboardInterrupt()])
def test_a_failure_midway_keeps_the_previous_database_serving(server, dump, live, failure):
    _restore(server, live, dump)
    seen: list[str] = []

    def failing_mask(conninfo: str) -> None:
        seen.append(conninfo)
        raise failure

    with pytest.raises(type(failure)):
        _restore(server, live, dump, between=failing_mask)

    assert seen and f"dbname={live}__new_" in seen[0]
    assert _scratch(server, live) == []
    assert server.one(live, "SELECT email FROM customers WHERE id = 1") == "user1@example.com"
    assert server.one(live, "SELECT count(*) FROM customers") == CUSTOMERS
    assert (
        server.one("postgres", f"SELECT datallowconn FROM pg_database WHERE datname = '{live}'")
        is True
    )


def test_a_successful_swap_replaces_the_data_and_leaves_no_scratch_database(server, dump, live):
    _restore(server, live, dump)
    session = psycopg.connect(server.db(live), autocommit=True)

    _restore(server, live, dump, between=_mask)

    assert server.one(live, "SELECT email FROM customers WHERE id = 1") == "USER1@EXAMPLE.COM"
    assert _scratch(server, live) == []
    assert list_databases(server.admin, live) == [live]
    with psycopg.connect(server.admin) as conn:
        flags = conn.execute(
            "SELECT datistemplate, datallowconn FROM pg_database WHERE datname = %s", [live]
        ).fetchone()
    assert flags == (True, True)
    # The session on the previous database was ended for the swap.
    with pytest.raises(psycopg.OperationalError):
        session.execute("SELECT 1")
    session.close()


def test_a_swap_that_fails_after_blocking_the_live_database_opens_it_again(
    server, dump, live, monkeypatch
):
    _restore(server, live, dump)
    new = f"{live}__new_0badcafe"
    create_database(server.admin, new)

    def stuck(conn, name, *, wait):
        raise RestoreError(f"1 sessions on the database {name} could not be ended within 10 s")

    monkeypatch.setattr(databases_module, "_terminate", stuck)

    with pytest.raises(RestoreError, match="could not be ended"):
        swap_database(server.admin, new=new, live=live)

    assert server.one(live, "SELECT count(*) FROM customers") == CUSTOMERS  # it accepts sessions
    assert database_exists(server.admin, new)


def test_a_restore_past_its_deadline_stops_with_a_clear_message(server, dump, live):
    create_database(server.admin, live)

    with pytest.raises(RestoreError, match=r"^the restore did not finish within 1\.5 s "):
        restore_dump(
            dump_path=dump,
            conninfo=server.db(live),
            between=lambda: time.sleep(1.6),
            timeout=1.5,
        )

    assert server.one(live, "SELECT count(*) FROM pg_indexes WHERE tablename = 'customers'") == 0


def test_a_swap_without_a_live_database_renames_the_new_one(server, live):
    new = f"{live}__new_0badcafe"
    create_database(server.admin, new)

    swap_database(server.admin, new=new, live=live)

    assert database_exists(server.admin, live)
    assert not database_exists(server.admin, new)
    assert (
        server.one("postgres", f"SELECT datistemplate FROM pg_database WHERE datname = '{live}'")
        is True
    )


def test_clone_database_makes_an_identical_copy(server, dump, live):
    _restore(server, live, dump)
    clone = f"{live}_run_1"
    checksum = (
        "SELECT md5(string_agg(c::text || o::text, ',' ORDER BY o.id))"
        " FROM orders o JOIN customers c ON c.id = o.customer_id"
    )
    session = psycopg.connect(server.db(live), autocommit=True)

    clone_database(server.admin, template=live, name=clone)

    assert _session_is_gone(session)  # a session on the template would block the copy
    session.close()

    assert server.one(clone, checksum) == server.one(live, checksum)
    assert server.one(clone, "SELECT count(*) FROM customer_emails") == CUSTOMERS
    assert (
        server.one("postgres", f"SELECT datistemplate FROM pg_database WHERE datname = '{clone}'")
        is False
    )


def _session_is_gone(session: psycopg.Connection) -> bool:
    try:
        session.execute("SELECT 1")
    except psycopg.OperationalError:
        return True
    return False


def test_drop_scratch_databases_removes_only_the_leftovers(server, live):
    create_database(server.admin, live)
    create_database(server.admin, f"{live}__new_deadbeef")
    create_database(server.admin, f"{live}__old_0123abcd")
    with psycopg.connect(server.admin, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{live}__old_0123abcd" IS_TEMPLATE true')

    dropped = drop_scratch_databases(server.admin, live=live)

    assert dropped == [f"{live}__new_deadbeef", f"{live}__old_0123abcd"]
    assert list_databases(server.admin, live) == [live]


def test_a_live_name_without_room_for_the_scratch_suffix_is_refused(server, dump):
    with pytest.raises(ValueError, match="too long"):
        _restore(server, "x" * 50, dump)


# Splitting a table's rows over several sessions ------------------------------------------------

CUSTOMERS_CHECKSUM = "SELECT md5(string_agg(c::text, ',' ORDER BY c.id)) FROM customers c"


def test_a_split_table_loads_every_row_over_several_sessions(server, dump, live, monkeypatch):
    # Blocks of 64 kB: enough of them for every session to get some of the sample's rows.
    monkeypatch.setattr(split_copy_module, "SPLIT_BLOCK_BYTES", 64 * 1024)
    create_database(server.admin, live)
    calls: list[tuple[int, int]] = []
    loaded: list[tuple[str, str]] = []
    sessions: list[int] = []

    def count_sessions(schema: str, table: str) -> bool:
        loaded.append((schema, table))
        # Each COPY session of the split load committed its own transaction.
        sessions.append(int(server.one(live, "SELECT count(DISTINCT xmin::text) FROM customers")))
        return False

    restore_dump(
        dump_path=dump,
        conninfo=server.db(live),
        jobs=2,
        split={("public", "customers"): 3},
        split_loaded=count_sessions,
        progress=lambda done, total: calls.append((done, total)),
        timeout=120,
    )

    assert loaded == [("public", "customers")]
    assert sessions == [3]
    assert server.one(live, CUSTOMERS_CHECKSUM) == server.one("sample", CUSTOMERS_CHECKSUM)
    assert server.one(live, "SELECT count(*) FROM orders") == ORDERS
    assert server.one(live, "SELECT count(*) FROM customer_emails") == CUSTOMERS
    assert calls[0] == (0, 3) and calls[-1] == (3, 3)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)


def test_a_split_table_of_a_dump_made_with_inserts_loads_in_one_session(server, live):
    dump = server.folder / "inserts.dump"
    run(
        [
            find_binary("pg_dump"), "-Fc", "--inserts", "--rows-per-insert=500", "-f", str(dump),
            "--table=customers", "--dbname", server.db("sample"),
        ],
        timeout=120,
    )  # fmt: skip
    create_database(server.admin, live)

    restore_dump(
        dump_path=dump,
        conninfo=server.db(live),
        jobs=2,
        split={("public", "customers"): 2},
        timeout=120,
    )

    assert server.one(live, CUSTOMERS_CHECKSUM) == server.one("sample", CUSTOMERS_CHECKSUM)


def test_a_split_load_that_fails_names_the_table_and_shows_no_row(server, dump, live):
    create_database(server.admin, live)

    def refuse_rows() -> None:
        with psycopg.connect(server.db(live), autocommit=True) as conn:
            conn.execute("ALTER TABLE customers ADD CONSTRAINT no_rows CHECK (id < 0)")

    with pytest.raises(RestoreError) as caught:
        restore_dump(
            dump_path=dump,
            conninfo=server.db(live),
            jobs=2,
            before_data=refuse_rows,
            split={("public", "customers"): 2},
            timeout=120,
        )

    message = str(caught.value)
    assert message.startswith("restoring the data of public.customers failed: ")
    assert "no_rows" in message
    # The failing row is the server's DETAIL: never shown, it is the source's data.
    assert "example.com" not in message and "Failing row" not in message


def test_a_split_load_of_a_cut_dump_says_the_dump_is_cut(server, half_dump, live):
    create_database(server.admin, live)
    cut = r"^the dump file is truncated or corrupted: pg_restore: error: "

    with pytest.raises(RestoreError, match=cut):
        restore_dump(
            dump_path=half_dump,
            conninfo=server.db(live),
            jobs=2,
            split={("billing", "audit_log"): 2, ("public", "customers"): 2},
            timeout=120,
        )
