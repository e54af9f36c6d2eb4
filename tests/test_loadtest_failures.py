"""loadtest.failures: Locust's error texts reduced to their causes, and failure groups
summed by cause across endpoints. The error texts are as Locust writes them in its
failures CSV (requests' HttpUser, FastHttpUser, catch_response failures)."""

from __future__ import annotations

from perfruns.loadtest import FailureGroup, failure_cause, group_failures
from perfruns.loadtest.failures import CONNECTION_LIMIT_CAUSES, normalise_error

TOO_MANY = "FATAL: sorry, too many clients already"

# The same cause, seen through different doors: the locustfile's own database check, the
# target's 500 quoting psycopg, Django's error page text.
TOO_MANY_CLIENTS = [
    'OperationalError(\'connection failed: connection to server at "127.0.0.1", port 5433 '
    "failed: FATAL:  sorry, too many clients already')",
    'OperationalError(\'connection failed: connection to server at "10.0.3.7", port 6432 '
    "failed: FATAL:  sorry, too many clients already')",
    "CatchResponseError('HTTPError 500 for /users/12 body: psycopg.OperationalError: "
    'connection failed: connection to server at "127.0.0.1", port 5433 failed: FATAL:  '
    "sorry, too many clients already')",
    "HTTPError('500 Server Error: Internal Server Error for url: /report') body: "
    "django.db.utils.OperationalError: FATAL: sorry, too many clients already (pid 48213)",
]


def test_it_names_too_many_clients_as_one_cause_whatever_the_port_address_or_door():
    assert {failure_cause(error) for error in TOO_MANY_CLIENTS} == {TOO_MANY}
    assert TOO_MANY in CONNECTION_LIMIT_CAUSES


def test_it_tells_reserved_slots_apart_but_counts_them_as_the_connection_limit():
    error = (
        "OperationalError('connection failed: FATAL:  remaining connection slots are "
        "reserved for non-replication superuser connections')"
    )

    cause = failure_cause(error)

    assert cause != TOO_MANY and cause in CONNECTION_LIMIT_CAUSES


def test_it_names_a_refused_connection_whichever_http_client_reported_it():
    requests_text = (
        "ConnectionError(MaxRetryError(\"HTTPConnectionPool(host='127.0.0.1', port=8000): "
        "Max retries exceeded with url: /users/12 (Caused by NewConnectionError('<urllib3."
        "connection.HTTPConnection object at 0x7f3b2c1d5e50>: Failed to establish a new "
        "connection: [Errno 111] Connection refused'))\"))"
    )
    fast_text = "ConnectionRefusedError(111, 'Connection refused')"

    assert failure_cause(requests_text) == failure_cause(fast_text) == "connection refused"


def test_it_keeps_the_http_status_but_not_the_url_of_an_http_error():
    a = failure_cause("HTTPError('500 Server Error: Internal Server Error for url: /users/12')")
    b = failure_cause("HTTPError('500 Server Error: Internal Server Error for url: /users/4821')")
    c = failure_cause(
        "HTTPError('500 Server Error: Internal Server Error for url: "
        "http://127.0.0.1:8000/users/7')"
    )
    unavailable = failure_cause(
        "HTTPError('503 Server Error: Service Unavailable for url: /users/12')"
    )

    assert a == b == c == "HTTPError('500 Server Error: Internal Server Error for url: <url>')"
    assert unavailable != a and "503" in unavailable


def test_it_sets_numbers_hex_ids_addresses_and_quoted_values_aside():
    text = (
        'CatchResponseError(\'order "a81f3c9e0b" of user 4821 not found on 10.0.0.12:8000, '
        "session 6f1d8c2e-1b7a-4c3e-9d2f-0a1b2c3d4e5f, object at 0x7f3b2c1d5e50')"
    )
    same = (
        'CatchResponseError(\'order "ffe0011234" of user 17 not found on 10.0.0.13:8001, '
        "session 0a1b2c3d-1b7a-4c3e-9d2f-6f1d8c2e0000, object at 0x55d0c0ffee00')"
    )

    cause = normalise_error(text)

    assert cause == normalise_error(same)
    assert cause == (
        "CatchResponseError('order <value> of user <n> not found on <address>, "
        "session <id>, object at <hex>')"
    )


def test_it_keeps_the_words_of_an_error_and_collapses_its_whitespace():
    text = "CatchResponseError('Expected   3 items,\n got 7')"

    assert normalise_error(text) == "CatchResponseError('Expected <n> items, got <n>')"


def test_it_sums_the_groups_of_a_cause_across_endpoints_most_frequent_first():
    groups = [
        FailureGroup("GET", "/users/[id]", TOO_MANY_CLIENTS[0], 40),
        FailureGroup("GET", "/report", TOO_MANY_CLIENTS[3], 7),
        FailureGroup("GET", "/users/[id]", TOO_MANY_CLIENTS[2], 3),
        FailureGroup(
            "POST", "/orders", "HTTPError('404 Client Error: Not Found for url: /o/1')", 5
        ),
        FailureGroup("POST", "/orders", TOO_MANY_CLIENTS[1], 9),
    ]

    causes = group_failures(groups)

    assert [(c.cause, c.occurrences) for c in causes] == [
        (TOO_MANY, 59),
        ("HTTPError('404 Client Error: Not Found for url: <url>')", 5),
    ]
    assert causes[0].endpoints == ["GET /users/[id]", "POST /orders", "GET /report"]
    assert causes[0].example == TOO_MANY_CLIENTS[0]
    assert causes[1].endpoints == ["POST /orders"]


def test_no_failures_is_no_cause():
    assert group_failures([]) == []
