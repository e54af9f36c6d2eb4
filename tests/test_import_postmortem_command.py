"""manage.py import_postmortem: a wiki file in, "<id> <url>" out, or a message and nothing saved."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import translation

from postmortems.models import Action, PostMortem, PostMortemStatus, Team

FIXTURES = Path(__file__).parent / "fixtures" / "postmortems"


def run(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("import_postmortem", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


@pytest.fixture
def untitled(tmp_path) -> Path:
    """The wiki sample as people write it: its first heading is just "POST MORTEM"."""
    text = (FIXTURES / "checkout-latency-wiki.md").read_text(encoding="utf-8")
    path = tmp_path / "postmortem-checkout-latency.md"
    path.write_text(
        text.replace("## POST MORTEM: Checkout latency at the lunch peak", "## POST MORTEM"),
        encoding="utf-8",
    )
    return path


def test_it_prints_the_id_and_the_url_of_the_new_post_mortem(db):
    out, err = run(str(FIXTURES / "invoice-export-full-scan-sev1.md"))
    pm = PostMortem.objects.get()
    assert out == f"{pm.pk} {settings.SITE_URL}/postmortems/{pm.pk}/\n"
    assert err == ""
    assert pm.title == "Invoice export full scan took the orders database down"
    assert pm.status == PostMortemStatus.PUBLISHED
    assert pm.created_by is None
    assert pm.actions.count() == 3


def test_it_imports_a_french_page(db):
    run(str(FIXTURES / "paiement-pool-connexions-fr.md"))
    pm = PostMortem.objects.get()
    assert pm.title == "Pool de connexions épuisé sur l'API paiement"
    assert pm.summary.startswith("Le 13 mars entre 18:10 et 18:55")
    assert [a.status for a in pm.actions.all()] == ["todo", "to_debate", "in_progress"]


def test_a_page_without_a_title_is_refused_under_strict_naming_the_file_and_the_line(db, untitled):
    with pytest.raises(CommandError) as exc:
        run(str(untitled), "--strict")
    assert str(exc.value) == (
        f"{untitled}:1: The post-mortem has no title: its first heading 'POST MORTEM' does "
        "not name the incident. Write it as '## POST MORTEM: <title>', add a '### Title' "
        "section, or give a title with the file. Nothing was saved."
    )
    assert PostMortem.objects.count() == 0
    assert Action.objects.count() == 0


def test_the_same_page_imports_with_a_title(db, untitled):
    out, _ = run(str(untitled), "--title", "Checkout latency at the lunch peak")
    pm = PostMortem.objects.get()
    assert out.split() == [str(pm.pk), f"{settings.SITE_URL}/postmortems/{pm.pk}/"]
    assert pm.title == "Checkout latency at the lunch peak"
    assert pm.status == PostMortemStatus.IN_REVIEW
    assert pm.impacts.count() == 6


def test_a_file_that_is_not_utf8_is_refused_with_its_line(db, tmp_path):
    path = tmp_path / "windows-1252.md"
    text = (FIXTURES / "paiement-pool-connexions-fr.md").read_text(encoding="utf-8")
    path.write_bytes(text.encode("cp1252"))
    with pytest.raises(CommandError) as exc:
        run(str(path))
    assert str(exc.value) == (
        f"{path}:1: The file is not UTF-8 text (byte 0xe9 cannot be decoded); save it as "
        "UTF-8 and try again. Nothing was saved."
    )
    assert PostMortem.objects.count() == 0


def test_a_bad_action_is_refused_under_strict_with_its_line_and_nothing_is_saved(db, tmp_path):
    text = (FIXTURES / "reporting-pool-exhaustion-owners.md").read_text(encoding="utf-8")
    path = tmp_path / "bad-status.md"
    path.write_text(text.replace("Status: to debate", "Status: maybe"), encoding="utf-8")
    line = text.splitlines().index("Status: to debate") + 1
    with pytest.raises(CommandError) as exc:
        run(str(path), "--strict")
    assert str(exc.value) == (
        f"{path}:{line}: Action 3 status 'maybe' is not one of to do, to debate, in progress, "
        "done, won't do. Nothing was saved."
    )
    assert PostMortem.objects.count() == 0
    assert not Team.objects.filter(name="Data Platform").exists()


def test_an_empty_file_is_refused_without_a_line(db, tmp_path):
    path = tmp_path / "empty.md"
    path.write_bytes(b"")
    with pytest.raises(CommandError) as exc:
        run(str(path))
    assert str(exc.value) == f"{path}: The file is empty. Nothing was saved."


def test_a_missing_file_is_named(db, tmp_path):
    path = tmp_path / "nowhere.md"
    with pytest.raises(CommandError) as exc:
        run(str(path))
    assert str(exc.value) == f"Cannot read {path}: No such file or directory."


def test_warnings_go_to_standard_error(db, tmp_path):
    text = (FIXTURES / "invoice-export-full-scan-sev1.md").read_text(encoding="utf-8")
    path = tmp_path / "no-prevent.md"
    path.write_text(text.replace("(prevent)", "(process)"), encoding="utf-8")
    with translation.override("en"):
        out, err = run(str(path))
    pm = PostMortem.objects.get()
    assert out == f"{pm.pk} {settings.SITE_URL}/postmortems/{pm.pk}/\n"
    assert err == (
        "warning: The page says Published, but publishing needs: A prevent action "
        "(SEV1/SEV2). It was imported as In review.\n"
    )
    assert pm.status == PostMortemStatus.IN_REVIEW


def test_a_dry_run_prints_every_field_and_guess_and_saves_nothing(db, tmp_path):
    text = (FIXTURES / "stock-soldes-lenteurs-fr.md").read_text(encoding="utf-8")
    out, _ = run(str(FIXTURES / "stock-soldes-lenteurs-fr.md"), "--dry-run")
    assert PostMortem.objects.count() == 0
    lines = out.splitlines()
    assert lines[0] == "Title: Lenteurs du service stock pendant les soldes"
    assert "Severity: sev2" in lines and "Status: draft" in lines
    assert "Started: 2023-01-23T16:40:00+00:00" in lines
    assert any(line.startswith("  3. ") and "(to_debate, prevent" in line for line in lines)
    debatre = text.splitlines().index("Statut : to debatre") + 1
    assert f"  - Line {debatre}: Action 3 status 'to debatre' read as 'to debate'." in lines


def test_a_bad_page_lists_every_problem_with_its_line(db, tmp_path):
    path = tmp_path / "two-problems.md"
    text = (FIXTURES / "reporting-pool-exhaustion-owners.md").read_text(encoding="utf-8")
    path.write_text(
        text.replace("Category: code", "Category: weather").replace(
            "2 April 2026", "31 February 2026"
        ),
        encoding="utf-8",
    )
    with pytest.raises(CommandError) as exc:
        run(str(path))
    message = str(exc.value).splitlines()
    assert len(message) == 3 and message[-1] == "Nothing was saved."
    assert all(line.startswith(f"{path}:") for line in message[:-1])
    assert PostMortem.objects.count() == 0


def test_a_folder_and_a_zip_of_a_wiki_export_import_page_by_page_each_reported(db, tmp_path):
    import zipfile

    folder = tmp_path / "wiki"
    folder.mkdir()
    for name in ("stock-soldes-lenteurs-fr.md", "thumbnail-resizer-oom-p1.md"):
        (folder / name).write_bytes((FIXTURES / name).read_bytes())
    (folder / "broken.md").write_text("", encoding="utf-8")
    (folder / "notes.txt").write_text("not a page", encoding="utf-8")
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(FIXTURES / "bookings-schema-change-sev1.md", "space/bookings.md")

    with pytest.raises(CommandError) as exc:
        run(str(folder), str(archive))

    assert str(exc.value) == "1 of 4 page(s) refused; the others were imported."
    assert PostMortem.objects.count() == 3
    titles = set(PostMortem.objects.values_list("title", flat=True))
    assert "Bookings database overload during an online schema change" in titles


def test_the_report_of_several_pages_names_each_one(db, tmp_path):
    folder = tmp_path / "wiki"
    folder.mkdir()
    (folder / "a.md").write_bytes((FIXTURES / "search-indexer-memory-leak.md").read_bytes())
    (folder / "b.md").write_text("## POST MORTEM: B\n\n### Date\nsomeday\n", encoding="utf-8")
    out = io.StringIO()
    err = io.StringIO()
    with pytest.raises(CommandError):
        call_command("import_postmortem", str(folder), stdout=out, stderr=err)
    pm = PostMortem.objects.get()
    assert (
        out.getvalue() == f"{folder / 'a.md'}: {pm.pk} {settings.SITE_URL}/postmortems/{pm.pk}/\n"
    )
    assert f"FAILED {folder / 'b.md'}:4: Date 'someday' is not a date" in err.getvalue()
