"""The set-up's accounts and their generated passwords, kept for `make run` to print at the
end of its output (where they are seen, not lost in the log above).

The file is created readable by its owner only (0600) and rewritten whole through a
temporary file, so a password is never readable by another account, even for an instant.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

HEADER = "# Fixproof accounts made by the set-up: username, password, role.\n"


def credentials_read(path: Path) -> dict[str, tuple[str, str]]:
    """{username: (password, role)} from the file, empty when there is none."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    found: dict[str, tuple[str, str]] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        username, password, *role = line.split()
        found[username] = (password, " ".join(role))
    return found


def credentials_write(path: Path, accounts: dict[str, tuple[str, str]]) -> None:
    """Add or replace these accounts in the file, keeping the others."""
    merged = credentials_read(path) | accounts
    path.parent.mkdir(parents=True, exist_ok=True)
    width = max(len(name) for name in merged)
    body = HEADER + "".join(
        f"{name:<{width}}  {password}  {role}".rstrip() + "\n"
        for name, (password, role) in merged.items()
    )
    # mkstemp creates the file 0600; the rename replaces the old one in one step.
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".credentials-")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(body)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    os.chmod(path, 0o600)
