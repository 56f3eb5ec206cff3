"""The parser tables Lark builds from the grammar are kept in the user's own cache directory,
never in a place another user can write (Lark unpickles what it finds there)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from lark import Lark

from rulec.frontends.grammar import OPTIONS, cache_file, grammar_text


def test_tables_are_kept_in_a_private_cache_directory(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = cache_file(grammar_text())
    assert path is not None and Path(path).parent == tmp_path / "cache" / "rulec"
    assert stat.S_IMODE(os.stat(Path(path).parent).st_mode) == 0o700
    Lark(grammar_text(), cache=path, **OPTIONS)
    assert Path(path).stat().st_size > 0
    assert cache_file(grammar_text() + "\n// changed") != path  # another grammar, another file


def test_home_cache_directory_is_the_default(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    path = cache_file(grammar_text())
    assert path is not None and Path(path).parent == tmp_path / ".cache" / "rulec"


@pytest.mark.parametrize("mode", [0o770, 0o777, 0o702])
def test_a_directory_others_can_write_is_not_used(tmp_path: Path, mode: int,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "rulec").mkdir()
    (tmp_path / "rulec").chmod(mode)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_file(grammar_text()) is None


def test_no_usable_directory_means_no_cache(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
    assert cache_file(grammar_text()) is None
    (tmp_path / "rulec").write_text("a file, not a directory")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_file(grammar_text()) is None
    (tmp_path / "rulec").unlink()
    (tmp_path / "rulec").symlink_to(tmp_path)  # a link: possibly someone else's directory
    assert cache_file(grammar_text()) is None
