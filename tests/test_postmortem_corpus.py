"""The corpus: post-mortems written in the house styles of real wikis, each with what it
must yield (tests/fixtures/postmortems/<name>.expected.yaml, written from reading the page).

postmortem-checkout-latency.md is the product's own sample, as it was handed over: its
heading names no incident, so its title comes from the file's name.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from postmortems import markdown

FIXTURES = Path(__file__).parent / "fixtures" / "postmortems"
PAGES = sorted(p.name for p in FIXTURES.glob("*.md"))


def expected(name: str) -> dict[str, Any]:
    return yaml.safe_load((FIXTURES / name).with_suffix(".expected.yaml").read_text("utf-8"))


def parsed(name: str) -> markdown.ParsedPostMortem:
    return markdown.parse((FIXTURES / name).read_text("utf-8"), file_name=name)


def utc(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.UTC).isoformat() if value else None


def figure(value: Any) -> str | None:
    return None if value is None else format(Decimal(str(value)).normalize(), "f")


def test_the_corpus_holds_ten_pages_or_more_each_with_what_it_must_yield():
    assert len(PAGES) >= 10
    assert all((FIXTURES / name).with_suffix(".expected.yaml").is_file() for name in PAGES)


@pytest.mark.parametrize("name", PAGES)
def test_each_page_yields_its_title_severity_status_and_times(name):
    page, want = parsed(name), expected(name)
    assert page.title == want["title"]
    assert page.fields.get("severity") == want["severity"]
    assert page.fields.get("status") == want["status"]
    written = page.fields.get("written_on")
    assert (written.isoformat() if written else None) == want["written_on"]
    for key in ("started_at", "ended_at", "detected_at"):
        assert utc(page.fields.get(key)) == want[key], key


@pytest.mark.parametrize("name", PAGES)
def test_each_page_yields_its_actions(name):
    page, want = parsed(name), expected(name)["actions"] or []
    assert len(page.actions) == len(want)
    for action, wanted in zip(page.actions, want, strict=True):
        if wanted["kind"]:
            assert action["kind"] == wanted["kind"]
        assert action["title"] == wanted["title"]
        assert action["status"] == wanted["status"]
        assert (action["owner_name"] or None) == wanted["owner"]
        assert (action["ticket_url"] or None) == wanted["ticket_url"]
        due = action["due_date"]
        assert (due.isoformat() if due else None) == wanted["due_date"]


@pytest.mark.parametrize("name", PAGES)
def test_each_page_yields_its_impacts_with_units_and_values_before(name):
    page, want = parsed(name), expected(name)["impacts"] or []
    assert len(page.impacts) == len(want)
    for impact, wanted in zip(page.impacts, want, strict=True):
        assert wanted["label_contains"] in impact["label"]
        assert figure(impact["value"]) == figure(wanted["value"])
        assert impact["unit"] == wanted["unit"]
        assert figure(impact["value_before"]) == figure(wanted.get("before"))


@pytest.mark.parametrize("name", PAGES)
def test_each_page_yields_its_root_causes_timeline_and_free_sections(name):
    page, want = parsed(name), expected(name)
    assert len(page.root_causes) == want["root_causes"]
    timeline = want["timeline"]
    assert len(page.timeline) == timeline["count"]
    if timeline["count"]:
        for which, entry in (("first", page.timeline[0]), ("last", page.timeline[-1])):
            assert utc(entry["occurred_at"]) == timeline[which]["at"]
            assert entry["text"].startswith(timeline[which]["text_starts"])
    # Text the reader kept beside a field it read is "<heading> (notes)".
    free = [
        s["heading"]
        for s in page.extra_sections
        if s["heading"] and not s["heading"].endswith(" (notes)")
    ]
    assert free == want["free_sections"]


def test_the_pages_that_need_no_guess_also_read_under_strict():
    clean = [name for name in PAGES if not parsed(name).notes]
    assert len(clean) >= 3
    for name in clean:
        markdown.parse((FIXTURES / name).read_text("utf-8"), file_name=name, strict=True)
