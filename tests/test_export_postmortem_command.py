"""manage.py export_postmortem: a post-mortem as Markdown, on standard output or in a file."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from postmortems import services

FIXTURES = Path(__file__).parent / "fixtures" / "postmortems"
# In the exporter's own format, so the export must give it back unchanged.
PAGE = FIXTURES / "search-indexer-memory-leak.md"


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("export_postmortem", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def imported(db) -> int:
    return services.postmortem_import(data=PAGE.read_bytes(), actor=None).postmortem.pk


def test_it_prints_the_post_mortem_as_markdown(imported):
    assert run(str(imported)) == PAGE.read_text(encoding="utf-8")


def test_it_writes_the_file_given_with_output_and_prints_nothing(imported, tmp_path):
    path = tmp_path / "export.md"
    assert run(str(imported), "--output", str(path)) == ""
    assert path.read_text(encoding="utf-8") == PAGE.read_text(encoding="utf-8")


def test_french_gives_french_headings_in_the_classic_order(imported):
    text = run(str(imported), "--language", "fr")
    assert re.findall(r"^### (.+)$", text, re.MULTILINE) == [
        "Date",
        "Auteurs",
        "Statut",
        "Sévérité",
        "Résumé",
        "Impacts",
        "Causes racines",
        "Déclencheur",
        "Résolution",
        "Détection",
        "Communication",
        "Chronologie",
        "Actions",
        "Leçons apprises",
        "Links",
    ]
    assert "### Résumé\nFrom 20 February the search indexer's memory grew" in text


def test_an_unknown_id_is_named(db):
    with pytest.raises(CommandError) as exc:
        run("999999")
    assert str(exc.value) == "No post-mortem with id 999999."


def test_an_unknown_language_is_refused(imported):
    with pytest.raises(CommandError) as exc:
        run(str(imported), "--language", "de")
    assert "invalid choice: 'de' (choose from 'en', 'fr')" in str(exc.value)


def test_an_output_file_that_cannot_be_written_is_named(imported, tmp_path):
    path = tmp_path / "missing-directory" / "export.md"
    with pytest.raises(CommandError) as exc:
        run(str(imported), "--output", str(path))
    assert str(exc.value) == f"Cannot write {path}: No such file or directory."
