"""Writing compiled files the way configuration management expects: all of a run's files or none,
each replaced atomically, through symlinks, keeping the mode and owner of the file replaced.

A file is staged as an unnamed temporary file in its target's directory (O_TMPFILE, so a killed
process leaves nothing behind), written and fsynced, and only once every file of the run is
staged are they linked into place, one after another, in the order given.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"),
          (stat.S_ISSOCK, "a socket"))


class OutputError(Exception):
    """A file of the run cannot be written; nothing of the run was written."""


@dataclass(frozen=True, slots=True)
class Planned:
    """One file to write: `shown` is the name the user gave, `path` where it really goes."""

    shown: str
    path: Path
    text: str


def plan(outputs: Sequence[tuple[str, str]], inputs: Sequence[str | Path] = ()) -> list[Planned]:
    """Check every (name, text) target before anything is written: its directory exists, it is
    a regular file or absent (after following symlinks), it is none of `inputs` and no two
    targets are the same file."""
    planned: list[Planned] = []
    read = {_identity(Path(p)) for p in inputs}
    read.discard(None)
    for shown, text in outputs:
        path = Path(os.path.realpath(shown))
        try:
            info = path.stat()
        except FileNotFoundError:
            info = None
        except OSError as exc:
            raise OutputError(f"cannot write {shown}: {exc.strerror}") from exc
        if info is not None and not stat.S_ISREG(info.st_mode):
            kind = next((name for test, name in _KINDS if test(info.st_mode)), "not a file")
            raise OutputError(f"cannot write {shown}: it is {kind}, not a regular file "
                              "(rulec replaces its output files atomically)")
        if not path.parent.is_dir():
            raise OutputError(f"cannot write {shown}: directory {path.parent} does not exist")
        if info is not None and (info.st_dev, info.st_ino) in read:
            raise OutputError(f"cannot write {shown}: it is one of the input files")
        if any(p.path == path for p in planned):
            raise OutputError(f"cannot write {shown}: it is given as two outputs")
        planned.append(Planned(shown, path, text))
    return planned


def write_all(planned: Sequence[Planned]) -> None:
    """Stage every file, then link each into place; on any failure before that nothing changes
    and OutputError names the file."""
    staged: list[_Staged] = []
    try:
        for item in planned:
            staged.append(_stage(item))
        for ready in staged:
            ready.commit()
    finally:
        for ready in staged:
            ready.discard()


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        info = path.stat()
    except (OSError, ValueError):
        return None
    return info.st_dev, info.st_ino


class _Staged:
    """A written, fsynced file not yet visible under its name."""

    def __init__(self, item: Planned, fd: int, named: str | None) -> None:
        self.item = item
        self.fd: int | None = fd
        self.named = named  # the mkstemp fallback's temporary name, else None (O_TMPFILE)

    def commit(self) -> None:
        path = self.item.path
        assert self.fd is not None
        try:
            if self.named is None:
                self.named = _link_unnamed(self.fd, path)
            os.replace(self.named, path)
            self.named = None
            _fsync_directory(path.parent)
        except OSError as exc:
            raise OutputError(f"cannot write {self.item.shown}: {exc.strerror}") from exc

    def discard(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self.named is not None:
            Path(self.named).unlink(missing_ok=True)
            self.named = None


def _stage(item: Planned) -> _Staged:
    path = item.path
    try:
        existing: os.stat_result | None = path.stat()
    except FileNotFoundError:
        existing = None
    except OSError as exc:
        raise OutputError(f"cannot write {item.shown}: {exc.strerror}") from exc
    named: str | None = None
    try:
        try:
            fd = os.open(path.parent, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise
            # A filesystem without O_TMPFILE: a named temporary file, removed on failure.
            fd, named = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        staged = _Staged(item, fd, named)
    except OSError as exc:
        raise OutputError(f"cannot write {item.shown}: {exc.strerror}") from exc
    try:
        if existing is not None:
            os.fchmod(fd, stat.S_IMODE(existing.st_mode))
            if (existing.st_uid, existing.st_gid) != _owner(fd):
                os.fchown(fd, existing.st_uid, existing.st_gid)
        else:
            os.fchmod(fd, 0o666 & ~_umask())  # what a shell redirection would create
        data = item.text.encode("utf-8")
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except OSError as exc:
        staged.discard()
        raise OutputError(f"cannot write {item.shown}: {exc.strerror}") from exc
    return staged


def _owner(fd: int) -> tuple[int, int]:
    info = os.fstat(fd)
    return info.st_uid, info.st_gid


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _link_unnamed(fd: int, path: Path) -> str:
    """Give the O_TMPFILE file a temporary name beside `path` (linkat needs a free name)."""
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for attempt in range(100):
            name = f".{path.name}.rulec-{os.getpid()}-{attempt}"
            try:
                # A dir fd makes Python call linkat(AT_SYMLINK_FOLLOW); plain link() would not
                # follow the /proc magic link (EXDEV).
                os.link(f"/proc/self/fd/{fd}", name, dst_dir_fd=directory, follow_symlinks=True)
            except FileExistsError:
                continue
            return str(path.parent / name)
    finally:
        os.close(directory)
    raise OSError(errno.EEXIST, "no free temporary name")


def _fsync_directory(directory: Path) -> None:
    # The rename itself is durable only once the directory is synced.
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = ["OutputError", "Planned", "plan", "write_all"]
