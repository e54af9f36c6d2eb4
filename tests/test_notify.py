"""Webhook notifications, delivered to a real HTTP receiver on 127.0.0.1: the message of
each kind of hook, retries and their waits, deduplication, and the webhook URL (a secret)
kept out of every error and every line."""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading
import traceback
import urllib.error
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from perfruns import notify
from perfruns.notify import DeliveryError, Event, MemoryDeduplicator

TOKEN = "SECRET-TOKEN-123"

EVENT = Event(
    kind="regression",
    title="checkout is slower than its baseline",
    url="https://fixproof.example/runs/12/",
    figures={"p95": "412 ms (+38 %)", "failure rate": "1.2 %"},
    dedupe_key="regression:scenario=demo:run=12",
)


class Receiver:
    """Records every request and answers each path from its script (then 200)."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self._scripts: dict[str, deque] = {}
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                receiver._answer(self)

            def do_GET(self):  # noqa: N802 - a followed redirect would come back as a GET
                receiver._answer(self)

            def log_message(self, format, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,))
        self.thread.start()

    def url(self, path: str = f"/hooks/{TOKEN}") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def script(self, *answers, path: str = f"/hooks/{TOKEN}") -> None:
        """Each answer is a status, or (status, headers)."""
        with self._lock:
            self._scripts.setdefault(path, deque()).extend(answers)

    def bodies(self, path: str = f"/hooks/{TOKEN}") -> list:
        return [json.loads(r["body"]) for r in self.requests if r["path"] == path]

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length)
        with self._lock:
            self.requests.append(
                {
                    "method": handler.command,
                    "path": handler.path,
                    "headers": dict(handler.headers),
                    "body": body,
                }
            )
            script = self._scripts.get(handler.path)
            answer = script.popleft() if script else 200
        status, headers = answer if isinstance(answer, tuple) else (answer, {})
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    """urllib would send even 127.0.0.1 through a proxy named in the environment."""
    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)


@pytest.fixture
def receiver():
    receiver = Receiver()
    yield receiver
    receiver.close()
    assert not receiver.thread.is_alive()


class Sleeps(list):
    """A sleep that only records how long it was asked to wait."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


class CountingOpener:
    """urllib's opener, counting the tries."""

    def __init__(self) -> None:
        self.real = notify.build_opener()
        self.calls = 0

    def open(self, request, timeout):
        self.calls += 1
        return self.real.open(request, timeout=timeout)


class EchoingOpener:
    """Fails the way some urllib and http.client errors do: quoting the URL or its path."""

    def __init__(self, error) -> None:
        self.error = error
        self.calls = 0

    def open(self, request, timeout):
        self.calls += 1
        raise self.error(request)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def assert_no_secret(exc: BaseException) -> None:
    assert TOKEN not in str(exc)
    assert TOKEN not in repr(exc)
    assert TOKEN not in "".join(traceback.format_exception(exc))
    assert exc.__context__ is None and exc.__cause__ is None


# --- Messages -------------------------------------------------------------------------


def test_slack_gets_a_bold_link_in_its_own_syntax_then_a_line_per_figure(receiver):
    status = notify.send("slack", receiver.url(), EVENT, sleep=Sleeps())

    assert status == 200
    [request] = receiver.requests
    assert request["method"] == "POST"
    assert request["headers"]["Content-Type"] == "application/json"
    assert receiver.bodies() == [
        {
            "text": "*<https://fixproof.example/runs/12/|checkout is slower than its baseline>*\n"
            "• p95: 412 ms (+38 %)\n"
            "• failure rate: 1.2 %"
        }
    ]


def test_mattermost_gets_a_bold_markdown_link_then_a_line_per_figure(receiver):
    notify.send("mattermost", receiver.url(), EVENT, sleep=Sleeps())

    assert receiver.bodies() == [
        {
            "text": "**[checkout is slower than its baseline](https://fixproof.example/runs/12/)**\n"
            "- p95: 412 ms (+38 %)\n"
            "- failure rate: 1.2 %"
        }
    ]


def test_the_json_hook_gets_the_fields_of_the_event(receiver):
    notify.send("json", receiver.url(), EVENT, sleep=Sleeps())

    assert receiver.bodies() == [
        {
            "event": "regression",
            "title": "checkout is slower than its baseline",
            "url": "https://fixproof.example/runs/12/",
            "figures": {"p95": "412 ms (+38 %)", "failure rate": "1.2 %"},
            "dedupe_key": "regression:scenario=demo:run=12",
        }
    ]


def test_markup_in_a_title_or_a_figure_cannot_break_the_link_or_the_lines():
    event = Event(
        kind="run_error",
        title="a <b> & [c](d) *e*",
        url="https://fixproof.example/runs/(12)|x",
        figures={"error": "line one\nline two"},
        dedupe_key="run_error:run=12",
    )

    assert notify.payload("slack", event)["text"] == (
        "*<https://fixproof.example/runs/(12)%7Cx|a &lt;b&gt; &amp; [c](d) *e*>*\n"
        "• error: line one line two"
    )
    assert notify.payload("mattermost", event)["text"] == (
        "**[a <b> & \\[c\\](d) \\*e\\*](https://fixproof.example/runs/%2812%29|x)**\n"
        "- error: line one line two"
    )


def test_an_unknown_hook_kind_is_refused_by_its_name():
    with pytest.raises(ValueError, match="'teams'"):
        notify.payload("teams", EVENT)


def test_an_unknown_event_kind_is_refused_by_its_name():
    with pytest.raises(ValueError, match="'slowness'"):
        Event(kind="slowness", title="t", url="https://x/", figures={}, dedupe_key="k")


# --- Retries --------------------------------------------------------------------------


def test_a_500_then_a_503_are_retried_with_doubling_waits_until_the_hook_answers(receiver):
    receiver.script(500, 503, 200)
    sleeps = Sleeps()

    status = notify.send("json", receiver.url(), EVENT, sleep=sleeps)

    assert status == 200
    assert sleeps == [1.0, 2.0]
    assert len(receiver.bodies()) == 3
    assert receiver.bodies()[0] == receiver.bodies()[2]


def test_the_waits_double_up_to_a_minute_and_the_last_failure_is_raised(receiver):
    receiver.script(*[500] * 6)
    sleeps = Sleeps()

    with pytest.raises(DeliveryError) as raised:
        notify.send("slack", receiver.url(), EVENT, attempts=6, backoff_s=10, sleep=sleeps)

    assert sleeps == [10, 20, 40, 60, 60]
    assert len(receiver.requests) == 6
    assert str(raised.value) == "the slack webhook answered HTTP 500 (after 6 attempts)"
    assert (raised.value.status, raised.value.attempts) == (500, 6)


def test_a_retry_after_in_seconds_is_the_wait_and_is_capped_at_a_minute(receiver):
    receiver.script((429, {"Retry-After": "7"}), (503, {"Retry-After": "3600"}), 200)
    sleeps = Sleeps()

    assert notify.send("slack", receiver.url(), EVENT, sleep=sleeps) == 200
    assert sleeps == [7, 60]


def test_a_retry_after_given_as_a_date_leaves_the_wait_to_the_backoff(receiver):
    receiver.script((503, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}), 200)
    sleeps = Sleeps()

    assert notify.send("slack", receiver.url(), EVENT, backoff_s=3, sleep=sleeps) == 200
    assert sleeps == [3]


def test_a_404_is_not_retried(receiver):
    receiver.script(404)
    sleeps = Sleeps()

    with pytest.raises(DeliveryError) as raised:
        notify.send("mattermost", receiver.url(), EVENT, sleep=sleeps)

    assert str(raised.value) == "the mattermost webhook answered HTTP 404"
    assert (raised.value.status, raised.value.attempts) == (404, 1)
    assert len(receiver.requests) == 1
    assert sleeps == []


def test_a_redirect_is_an_answer_and_is_not_followed(receiver):
    receiver.script((302, {"Location": receiver.url("/elsewhere")}))

    with pytest.raises(DeliveryError, match="answered HTTP 302"):
        notify.send("json", receiver.url(), EVENT, sleep=Sleeps())

    assert [r["path"] for r in receiver.requests] == [f"/hooks/{TOKEN}"]


def test_an_unreachable_hook_fails_after_every_attempt_was_made():
    opener = CountingOpener()
    sleeps = Sleeps()
    url = f"http://127.0.0.1:{closed_port()}/hooks/{TOKEN}"

    with pytest.raises(DeliveryError) as raised:
        notify.send("slack", url, EVENT, attempts=3, sleep=sleeps, opener=opener)

    assert opener.calls == 3
    assert sleeps == [1.0, 2.0]
    assert str(raised.value).startswith("the slack webhook could not be reached: ")
    assert str(raised.value).endswith(" (after 3 attempts)")
    assert (raised.value.status, raised.value.attempts) == (None, 3)


# --- The URL is a secret --------------------------------------------------------------


@pytest.mark.parametrize("failure", ["500 every time", "404", "unreachable"])
def test_no_delivery_error_shows_the_webhook_url(receiver, failure):
    url = receiver.url()
    if failure == "500 every time":
        receiver.script(500, 500)
    elif failure == "404":
        receiver.script(404)
    else:
        url = f"http://127.0.0.1:{closed_port()}/hooks/{TOKEN}"

    with pytest.raises(DeliveryError) as raised:
        notify.send("json", url, EVENT, attempts=2, sleep=Sleeps())

    assert_no_secret(raised.value)


@pytest.mark.parametrize(
    "error, tries",
    [
        (lambda request: urllib.error.URLError(f"cannot open {request.full_url}"), 2),
        (lambda request: ConnectionResetError(f"reset while sending {request.selector}"), 2),
        # A URL http.client refuses is refused again on every try: tried once.
        (lambda request: http.client.InvalidURL(f"URL can't contain {request.selector!r}"), 1),
    ],
    ids=["URLError quoting the URL", "OSError quoting the path", "InvalidURL quoting the path"],
)
def test_an_error_that_quotes_the_url_or_its_path_is_redacted(error, tries):
    opener = EchoingOpener(error)

    with pytest.raises(DeliveryError) as raised:
        notify.send(
            "slack",
            f"https://hooks.example/services/{TOKEN}?token={TOKEN}",
            EVENT,
            attempts=2,
            sleep=Sleeps(),
            opener=opener,
        )

    assert notify.REDACTED in str(raised.value)
    assert_no_secret(raised.value)
    assert opener.calls == tries


def test_redact_url_hides_the_url_its_path_its_query_and_its_credentials():
    url = f"https://bot:{TOKEN}-pw@hooks.example/services/{TOKEN}?key={TOKEN}-q"
    text = (
        f"cannot open {url}; path /services/{TOKEN}?key={TOKEN}-q; "
        f"query key={TOKEN}-q; password {TOKEN}-pw; host hooks.example/"
    )

    redacted = notify.redact_url(text, url)

    assert TOKEN not in redacted
    assert redacted == (
        "cannot open [webhook URL]; path [webhook URL]; query [webhook URL]; "
        "password [webhook URL]; host hooks.example/"
    )


@pytest.mark.parametrize(
    "url",
    [
        f"ftp://hooks.example/{TOKEN}",
        f"javascript:{TOKEN}",
        f"/hooks/{TOKEN}",
        f"http:///hooks/{TOKEN}",
        f"http://hooks.example:port/{TOKEN}",
        f"http://hooks.example/{TOKEN} ",
        f"http://hooks.example/{TOKEN}\r\nX-Injected: 1",
    ],
)
def test_only_plain_http_and_https_urls_are_accepted_and_a_refusal_does_not_echo_them(url):
    opener = CountingOpener()

    with pytest.raises(ValueError) as raised:
        notify.send("slack", url, EVENT, sleep=Sleeps(), opener=opener)

    assert "webhook URL" in str(raised.value)
    assert TOKEN not in str(raised.value)
    assert opener.calls == 0


# --- Deduplication --------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_key_is_new_once_within_the_ttl_and_new_again_after_it():
    clock = Clock()
    dedupe = MemoryDeduplicator(ttl_s=100, clock=clock)

    assert dedupe.first_time("a") is True
    assert dedupe.first_time("b") is True
    clock.now += 99.9
    assert dedupe.first_time("a") is False
    clock.now += 0.1
    assert dedupe.first_time("a") is True
    assert dedupe.first_time("a") is False


def test_a_repeat_within_the_ttl_does_not_extend_it():
    clock = Clock()
    dedupe = MemoryDeduplicator(ttl_s=100, clock=clock)

    dedupe.first_time("a")
    clock.now += 60
    assert dedupe.first_time("a") is False
    clock.now += 40
    assert dedupe.first_time("a") is True


def test_a_forgotten_key_is_new_again():
    dedupe = MemoryDeduplicator(ttl_s=100, clock=Clock())

    dedupe.first_time("a")
    dedupe.forget("a")

    assert dedupe.first_time("a") is True


# --- notify ---------------------------------------------------------------------------


def test_notify_sends_to_each_hook_once_and_says_so_when_called_again(receiver):
    hooks = [
        ("slack", receiver.url("/hooks/one")),
        ("json", receiver.url("/hooks/two")),
        ("json", receiver.url("/hooks/three")),  # another hook of the same kind
    ]
    dedupe = MemoryDeduplicator(clock=Clock())

    first = notify.notify(hooks, EVENT, dedupe=dedupe, sleep=Sleeps())
    again = notify.notify(hooks, EVENT, dedupe=dedupe, sleep=Sleeps())

    assert first == ["sent to slack", "sent to json", "sent to json"]
    assert again == ["already sent to slack", "already sent to json", "already sent to json"]
    assert sorted(r["path"] for r in receiver.requests) == [
        "/hooks/one",
        "/hooks/three",
        "/hooks/two",
    ]


def test_notify_sends_again_once_the_ttl_is_over(receiver):
    hooks = [("slack", receiver.url())]
    clock = Clock()
    dedupe = MemoryDeduplicator(ttl_s=3600, clock=clock)

    notify.notify(hooks, EVENT, dedupe=dedupe, sleep=Sleeps())
    clock.now += 3600

    assert notify.notify(hooks, EVENT, dedupe=dedupe, sleep=Sleeps()) == ["sent to slack"]
    assert len(receiver.requests) == 2


def test_one_failing_hook_among_three_does_not_stop_the_other_two(receiver):
    broken = f"/hooks/broken-{TOKEN}"
    receiver.script(404, path=broken)
    hooks = [
        ("slack", receiver.url("/hooks/slack")),
        ("mattermost", receiver.url(broken)),
        ("json", receiver.url("/hooks/json")),
    ]

    lines = notify.notify(hooks, EVENT, dedupe=MemoryDeduplicator(), sleep=Sleeps())

    assert lines == [
        "sent to slack",
        "failed to send to mattermost: the mattermost webhook answered HTTP 404",
        "sent to json",
    ]
    assert [r["path"] for r in receiver.requests] == ["/hooks/slack", broken, "/hooks/json"]


def test_no_line_of_notify_shows_a_webhook_url():
    hooks = [
        ("json", f"https://hooks.example/{TOKEN}"),  # its error quotes the URL
        ("slack", f"ftp://hooks.example/{TOKEN}"),
        ("teams", f"https://hooks.example/{TOKEN}"),
    ]

    lines = notify.notify(
        hooks,
        EVENT,
        dedupe=MemoryDeduplicator(),
        attempts=1,
        sleep=Sleeps(),
        opener=EchoingOpener(lambda request: urllib.error.URLError(request.full_url)),
    )

    assert [line.split(":")[0] for line in lines] == [
        "failed to send to json",
        "failed to send to slack",
        "failed to send to teams",
    ]
    assert not [line for line in lines if TOKEN in line]


def test_a_hook_that_failed_is_tried_again_on_the_next_notify(receiver):
    receiver.script(500)
    hooks = [("json", receiver.url())]
    dedupe = MemoryDeduplicator(clock=Clock())

    first = notify.notify(hooks, EVENT, dedupe=dedupe, attempts=1, sleep=Sleeps())
    second = notify.notify(hooks, EVENT, dedupe=dedupe, attempts=1, sleep=Sleeps())

    assert first == ["failed to send to json: the json webhook answered HTTP 500"]
    assert second == ["sent to json"]
    assert len(receiver.requests) == 2
