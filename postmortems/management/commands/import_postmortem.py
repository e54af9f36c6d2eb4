from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from postmortems import markdown, services
from postmortems.markdown import MarkdownError

PAGE_SUFFIXES = (".md", ".markdown")
MAX_ARCHIVE_PAGES = 2000


def _pages(path: Path) -> Iterator[tuple[str, bytes | OSError]]:
    """(name, bytes or the error reading them) of each page a path holds: the file, the
    Markdown files of a folder (a wiki export), or those of a zip archive."""
    if path.is_dir():
        for page in sorted(p for p in path.rglob("*") if p.suffix.lower() in PAGE_SUFFIXES):
            try:
                yield str(page), page.read_bytes()
            except OSError as exc:
                yield str(page), exc
        return
    if path.suffix.lower() == ".zip":
        try:
            archive = zipfile.ZipFile(path)
        except (OSError, zipfile.BadZipFile) as exc:
            yield str(path), OSError(f"not a readable zip archive ({exc})")
            return
        with archive:
            members = [
                m
                for m in archive.infolist()
                if not m.is_dir() and Path(m.filename).suffix.lower() in PAGE_SUFFIXES
            ]
            for member in members[:MAX_ARCHIVE_PAGES]:
                name = f"{path}:{member.filename}"
                if member.file_size > settings.POSTMORTEM_IMPORT_MAX_BYTES:
                    yield name, OSError("larger than a post-mortem page may be")
                    continue
                yield name, archive.read(member)
            if len(members) > MAX_ARCHIVE_PAGES:
                yield str(path), OSError(f"more than {MAX_ARCHIVE_PAGES} pages: the rest skipped")
        return
    try:
        yield str(path), path.read_bytes()
    except OSError as exc:
        yield str(path), exc


class Command(BaseCommand):
    help = (
        "Create post-mortems from wiki Markdown files, folders of them or zip archives of a "
        "wiki export; prints each one's id and URL."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("files", nargs="+", help="Markdown files, folders or zip archives")
        parser.add_argument("--title", help="the title, when the file's first heading has none")
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="print what would be imported, and every guess, without saving anything",
        )
        parser.add_argument(
            "--strict",
            action="store_true",
            help="refuse a file on any guess (a typo in a status, a missing title...)",
        )

    def handle(self, *args, **options) -> None:
        paths = [Path(name) for name in options["files"]]
        single = len(paths) == 1 and not paths[0].is_dir() and paths[0].suffix.lower() != ".zip"
        if single:
            self._one(paths[0], options)
            return
        refused = total = 0
        for path in paths:
            if not path.exists():
                self.stderr.write(f"FAILED {path}: no such file or folder.")
                refused += 1
                total += 1
                continue
            for name, data in _pages(path):
                total += 1
                if isinstance(data, OSError):
                    self.stderr.write(f"FAILED {name}: cannot read it: {data}.")
                    refused += 1
                    continue
                try:
                    summary = self._import(name, data, options)
                except MarkdownError as exc:
                    refused += 1
                    for problem in exc.problems:
                        where = f"{name}:{problem.line}" if problem.line else name
                        self.stderr.write(f"FAILED {where}: {problem.message}")
                    continue
                self.stdout.write(f"{name}: {summary}")
        if refused:
            raise CommandError(f"{refused} of {total} page(s) refused; the others were imported.")

    def _import(self, name: str, data: bytes, options: dict) -> str:
        read = {"data": data, "title": options["title"], "file_name": Path(name).name}
        if options["dry_run"]:
            parsed = services.postmortem_read(**read, strict=options["strict"])
            return (
                f"would import '{parsed.title}' ({len(parsed.actions)} actions, "
                f"{len(parsed.notes)} guesses)"
            )
        result = services.postmortem_import(actor=None, strict=options["strict"], **read)
        for warning in result.warnings:
            self.stderr.write(f"warning: {name}: {warning}")
        pm = result.postmortem
        return f"{pm.pk} {settings.SITE_URL}{pm.get_absolute_url()}"

    def _one(self, path: Path, options: dict) -> None:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CommandError(f"Cannot read {path}: {exc.strerror}.") from None
        read = {"data": data, "title": options["title"], "file_name": path.name}
        try:
            if options["dry_run"]:
                parsed = services.postmortem_read(**read, strict=options["strict"])
                self.stdout.write(markdown.describe(parsed))
                return
            result = services.postmortem_import(actor=None, strict=options["strict"], **read)
        except MarkdownError as exc:
            if len(exc.problems) > 1:
                lines = [
                    f"{path}:{p.line}: {p.message}" if p.line else f"{path}: {p.message}"
                    for p in exc.problems
                ]
                raise CommandError("\n".join(lines) + "\nNothing was saved.") from None
            where = f"{path}:{exc.line}: " if exc.line else f"{path}: "
            raise CommandError(where + exc.message + " Nothing was saved.") from None
        for warning in result.warnings:
            self.stderr.write(f"warning: {warning}")
        pm = result.postmortem
        self.stdout.write(f"{pm.pk} {settings.SITE_URL}{pm.get_absolute_url()}")
