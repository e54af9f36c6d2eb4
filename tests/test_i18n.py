"""The French interface: a complete catalogue, compiled, and pages that use it.

The .mo file is built by `make messages` and never committed, so every page
test here first checks that it exists and matches the .po; otherwise the pages
would silently fall back to English and the failures would point nowhere.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po
from django.conf import settings
from django.urls import reverse
from django.utils import translation

from postmortems import services

from .conftest import make_content

ROOT = Path(settings.BASE_DIR)
PO = ROOT / "locale" / "fr" / "LC_MESSAGES" / "django.po"
MO = PO.with_suffix(".mo")
NBSP = "\u00a0"  # French puts a no-break space before ":" and "?".

# Every %-directive, %% included: Jinja's newstyle gettext applies "%" to every
# translated string, so a stray "%" in a translation breaks the page.
_DIRECTIVE = re.compile(r"%(?:\([^)]*\))?[#0 +-]*\d*(?:\.\d+)?[a-zA-Z%]")


def read_catalogue(path: Path = PO) -> Catalog:
    with path.open("rb") as f:
        return read_po(f, locale="fr")


def strings(message) -> tuple[str, ...]:
    return tuple(message.string) if message.pluralizable else (message.string,)


@pytest.fixture(scope="module")
def compiled_catalogue() -> None:
    if not MO.is_file():
        pytest.fail(
            f"{MO.relative_to(ROOT)} is missing: run `make messages` "
            "(the compiled catalogue is built, never committed).",
            pytrace=False,
        )
    with MO.open("rb") as f:
        compiled = read_mo(f)
    stale = [
        m.id
        for m in read_catalogue()
        if m.id
        and ((found := compiled.get(m.id, m.context)) is None or strings(found) != strings(m))
    ]
    if stale:
        pytest.fail(
            f"{MO.relative_to(ROOT)} is older than django.po ({len(stale)} entries differ, "
            f"first {stale[0]!r}): run `make messages`.",
            pytrace=False,
        )


# ---------------------------------------------------------------- catalogue


def test_every_entry_of_the_french_catalogue_is_translated():
    catalogue = read_catalogue()
    assert len(catalogue) > 100, "the French catalogue looks truncated"
    untranslated = [m.id for m in catalogue if m.id and not all(s.strip() for s in strings(m))]
    fuzzy = [m.id for m in catalogue if m.id and m.fuzzy]
    assert untranslated == []
    # `make messages` compiles with --use-fuzzy: a fuzzy guess would reach the pages.
    assert fuzzy == []


def test_translations_keep_their_placeholders():
    wrong = {
        m.id: s
        for m in read_catalogue()
        if m.id
        for msgid, s in zip(m.id if m.pluralizable else (m.id,), strings(m), strict=False)
        if Counter(_DIRECTIVE.findall(msgid)) != Counter(_DIRECTIVE.findall(s))
    }
    assert wrong == {}


def test_the_catalogue_holds_every_text_of_the_code_and_the_templates(tmp_path):
    # The same extraction as `make extract-messages`, into a scratch template.
    pot = tmp_path / "django.pot"
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("pybabel")),
            "extract",
            "-F",
            "babel.cfg",
            "-k",
            "gettext_lazy",
            "-k",
            "ngettext_lazy",
            "-k",
            "pgettext:1c,2",
            "--no-location",
            "--sort-output",
            "-o",
            str(pot),
            "--ignore-dirs=.venv .* tests",
            ".",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    extracted = {m.id for m in read_catalogue(pot) if m.id}
    known = {m.id for m in read_catalogue() if m.id}
    assert len(extracted) > 100
    missing = sorted(extracted - known, key=str)
    assert missing == [], "new texts: run `make extract-messages`, translate, `make messages`"


# ---------------------------------------------------------------- pages


@pytest.fixture(autouse=True)
def back_to_english() -> Iterator[None]:
    yield
    # LocaleMiddleware activates French in this thread and never deactivates
    # it: without this, the tests that run next would run in French.
    translation.deactivate()


@pytest.fixture
def french(client, engineer, compiled_catalogue):
    client.force_login(engineer)

    def get(url: str) -> str:
        response = client.get(url, HTTP_ACCEPT_LANGUAGE="fr")
        assert response.status_code == 200
        return response.content.decode()

    return get


def assert_shows(html: str, *texts: str) -> None:
    missing = [t for t in texts if t not in html]
    assert missing == []


def test_the_list_page_speaks_french(french, engineer, make_postmortem):
    make_postmortem(actor=engineer, authors=[engineer])

    html = french(reverse("postmortems:list"))

    assert '<html lang="fr">' in html
    assert_shows(
        html,
        "Nouveau post-mortem",
        "Importer du Markdown",
        "Tous statuts",
        "Toutes sévérités",
        "Rechercher",
        "<th>Sévérité</th>",
        "<th>Début de l’incident</th>",
        "<th>Actions ouvertes</th>",
        ">Brouillon</span>",
        "Se déconnecter",
        "13 mars 2026",
    )
    assert "New post-mortem" not in html
    assert "Open actions" not in html


def test_the_detail_page_speaks_french(french, engineer):
    content = make_content(severity="sev1")
    content.impacts = [
        {"label": "failed requests", "value": Decimal(270), "unit": "", "window": ""},
        {"label": "p95", "value": Decimal("2.5"), "unit": "s", "window": ""},
    ]
    pm = services.postmortem_save(actor=engineer, content=content)

    html = french(reverse("postmortems:detail", args=[pm.pk]))

    assert_shows(
        html,
        "Télécharger en Markdown",
        "Envoyer en relecture",
        "<h2>Résumé</h2>",
        "<h2>Causes racines</h2>",
        "<h2>Déclencheur</h2>",
        "<h2>Chronologie</h2>",
        ">Base de données</span>",
        ">détecter</span>",
        ">prévenir</span>",
        ">à faire</span>",
        "Mettre à jour l’action",
        f"Prêt à publier{NBSP}?",
        "Une action de détection (SEV1/SEV2)",
        "<h2>Historique</h2>",
        # Figures in the French way, never as 2.7E+2.
        '<td class="num">270</td>',
        '<td class="num">2,5 s</td>',
    )
    assert "Download Markdown" not in html
    assert "Ready to publish?" not in html


def test_the_edit_page_speaks_french(french, engineer, make_postmortem):
    pm = make_postmortem(actor=engineer)

    html = french(reverse("postmortems:edit", args=[pm.pk]))

    assert_shows(
        html,
        f"<h1>Modifier{NBSP}: Pool exhausted</h1>",
        "<legend>Incident</legend>",
        f">Titre{NBSP}:</label>",
        f">Équipe{NBSP}:</label>",
        f">Début de l’incident{NBSP}:</label>",
        "Séparés par des virgules",
        "Ajouter un impact",
        "Ajouter une cause racine",
        "Ajouter une action",
        f">Date d’échéance{NBSP}:</label>",
        '<option value="todo" selected>à faire</option>',
        # Django's own catalogue, for the formsets' delete box.
        f">Supprimer{NBSP}:</label>",
        "Enregistrer",
        "Annuler",
    )
    assert "Add an action" not in html


def test_without_a_french_preference_the_pages_stay_in_english(client, engineer, make_postmortem):
    pm = make_postmortem(actor=engineer)
    client.force_login(engineer)

    html = client.get(reverse("postmortems:detail", args=[pm.pk])).content.decode()

    assert '<html lang="en">' in html
    assert_shows(html, "Download Markdown", "Send to review", "Ready to publish?")
    assert "Télécharger en Markdown" not in html


def test_the_language_selector_switches_to_french(client, engineer, compiled_catalogue):
    client.force_login(engineer)

    response = client.post(
        reverse("set_language"), {"language": "fr", "next": reverse("postmortems:list")}
    )

    assert response.status_code == 302
    assert response["Location"] == reverse("postmortems:list")
    # No Accept-Language header: the cookie the selector set decides.
    html = client.get(response["Location"]).content.decode()
    assert '<html lang="fr">' in html
    assert "Nouveau post-mortem" in html


def test_a_refusal_is_explained_in_french(client, viewer, compiled_catalogue):
    client.force_login(viewer)

    response = client.get(reverse("postmortems:create"), HTTP_ACCEPT_LANGUAGE="fr")

    assert response.status_code == 403
    html = response.content.decode()
    assert "Vous ne pouvez pas faire cela" in html
    assert "Seuls les ingénieurs peuvent rédiger des post-mortems." in html
