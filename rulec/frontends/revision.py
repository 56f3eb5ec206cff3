"""Policies as they are at a git revision: the tree at REV, materialised in a temporary
directory, so `include`s resolve at REV exactly as they do in the working tree.

`rulec diff --git REV FILE...` reads FILE (a path in the working tree) both from the
working tree and from REV; spans of the REV side name `REV:path`.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path


class RevisionError(Exception):
    """git could not give the tree at a revision (not a repository, unknown revision...)."""


@dataclass(frozen=True, slots=True)
class Revision:
    rev: str
    root: Path  # where the tree at `rev` was unpacked
    files: tuple[Path, ...]  # the asked-for files, inside `root`

    def label(self, text: str) -> str:
        """`text` with the unpacked tree's paths spelled `REV:path`."""
        return text.replace(f"{self.root}/", f"{self.rev}:")


def _git(args: Sequence[str], cwd: Path) -> bytes:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, check=False)
    except FileNotFoundError as exc:
        raise RevisionError("git is not installed") from exc
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip().splitlines()
        raise RevisionError(message[-1] if message else f"git {' '.join(args)} failed")
    return done.stdout


@contextlib.contextmanager
def at_revision(rev: str, files: Sequence[str], cwd: Path | None = None) -> Iterator[Revision]:
    """The tree of the repository around `cwd` at `rev`, unpacked for as long as the block
    runs; `files` (relative to `cwd` or absolute, inside the repository) mapped into it."""
    here = (cwd or Path.cwd()).resolve()
    if rev.startswith("-"):
        raise RevisionError(f"{rev!r} is not a revision")
    top = Path(_git(["rev-parse", "--show-toplevel"], here).decode().strip()).resolve()
    try:
        commit = _git(["rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
                      here).decode().strip()
    except RevisionError as exc:
        raise RevisionError(f"unknown revision {rev!r}") from exc
    tree = _git(["archive", "--format=tar", commit], top)
    with tempfile.TemporaryDirectory(prefix="rulec-rev-") as tmp:
        root = Path(tmp)
        with tarfile.open(fileobj=io.BytesIO(tree)) as archive:
            archive.extractall(root, filter="data")  # no links out, no devices
        mapped = []
        for name in files:
            path = (here / name).resolve()
            try:
                inside = path.relative_to(top)
            except ValueError as exc:
                raise RevisionError(f"{name} is outside the repository at {top}") from exc
            if not (root / inside).is_file():
                raise RevisionError(f"{inside} does not exist at {rev}")
            mapped.append(root / inside)
        yield Revision(rev, root, tuple(mapped))


__all__ = ["Revision", "RevisionError", "at_revision"]
