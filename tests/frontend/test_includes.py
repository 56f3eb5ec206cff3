"""Reading policy files: includes are bounded in depth, an included file that is not policy
is never read nor quoted, a UTF-8 byte order mark is not policy text, and blocks nest only as
deep as their lowering can walk."""

from __future__ import annotations

from pathlib import Path

import pytest

from rulec.api import parse_files, parse_text
from rulec.diagnostics import RulecError


def test_utf8_bom_is_not_policy_text(tmp_path: Path) -> None:
    path = tmp_path / "bom.rules"
    path.write_bytes(b"\xef\xbb\xbftable ip filter { chain INPUT { accept } }\n")
    assert parse_files([path]).tables
    assert parse_text("\ufefftable ip filter { chain INPUT { accept } }\n").tables
    path.write_bytes(b"\xef\xbb\xbftable ip filter { chain INPUT { accept from } }\n")
    with pytest.raises(RulecError) as info:
        parse_files([path])
    span = info.value.diagnostics[0].span
    assert span is not None and (span.line, span.column) == (1, 45)  # columns start after it


SECRET = "root:$y$j9T$s3cr3t-hash:19000:0:99999:7:::"


@pytest.mark.parametrize("content", [
    SECRET.encode() + b"\n", b"# a comment first\n" + SECRET.encode() + b"\n",
    b"\xff\xfe" + SECRET.encode(), b"tabel ip filter { " + SECRET.encode() + b" }\n",
])
def test_included_file_that_is_not_policy_is_never_quoted(tmp_path: Path,
                                                          content: bytes) -> None:
    (tmp_path / "shadow").write_bytes(content)
    (tmp_path / "p.rules").write_text('include "shadow"\n', encoding="utf-8")
    with pytest.raises(RulecError) as info:
        parse_files([tmp_path / "p.rules"])
    rendered = info.value.render()
    assert [d.code for d in info.value.diagnostics] == ["E0212"]
    assert "s3cr3t" not in rendered and "root:" not in rendered and "tabel" not in rendered
    assert rendered.startswith(f"{tmp_path / 'p.rules'}:1:9: error[E0212]: ")


def test_included_policy_file_is_still_quoted(tmp_path: Path) -> None:
    (tmp_path / "common.rules").write_text("# shared\ndefine a = 1\ndefine b = $c\n",
                                           encoding="utf-8")
    (tmp_path / "p.rules").write_text('include "common.rules"\n', encoding="utf-8")
    with pytest.raises(RulecError) as info:
        parse_files([tmp_path / "p.rules"])
    assert "   3 | define b = $c" in info.value.render()


def test_include_depth_is_bounded(tmp_path: Path) -> None:
    """A chain of 350 includes used to exhaust Python's stack (exit 3, RecursionError)."""
    for i in range(350):
        (tmp_path / f"f{i}.rules").write_text(f'include "f{i + 1}.rules"\n', encoding="utf-8")
    (tmp_path / "f350.rules").write_text("table ip filter { chain INPUT { accept } }\n",
                                         encoding="utf-8")
    with pytest.raises(RulecError) as info:
        parse_files([tmp_path / "f0.rules"])
    (diagnostic,) = info.value.diagnostics
    assert diagnostic.code == "E0211" and diagnostic.span is not None
    assert diagnostic.span.file == str(tmp_path / "f32.rules")
    # 32 nested includes are fine.
    (tmp_path / "f32.rules").write_text("table ip filter { chain INPUT { accept } }\n",
                                        encoding="utf-8")
    assert parse_files([tmp_path / "f0.rules"]).tables


def test_docker_block_nesting_is_bounded() -> None:
    depth = 5000
    text = "docker {\n" + "network x {\n" * depth + "}\n" * depth + "}\n"
    with pytest.raises(RulecError) as info:
        parse_text(text, "deep.rules")
    assert [d.code for d in info.value.diagnostics] == ["E0105"]


def test_variables_doubling_each_other_stay_small() -> None:
    """`define a1 = { $a0, $a0 }` and so on doubled a set per line: 600 bytes made a million
    atoms (12 s, 770 MB), 40 lines would make 2^40. A set holds each value once."""
    import resource
    import subprocess
    import sys

    lines = ["define a0 = { 22, 80 }"]
    lines += [f"define a{i} = {{ $a{i - 1}, $a{i - 1}, {1000 + i} }}" for i in range(1, 40)]
    text = "\n".join(lines) + "\ntable ip filter { chain INPUT { accept tcp dport $a39 } }\n"
    script = ("import sys; from rulec.api import parse_text; "
              "r = parse_text(sys.stdin.read()); print(len(r.tables[0].chains[0].rules[0]"
              ".match.dport.ranges))")

    def limit() -> None:  # a regression must fail here, not take the machine's memory
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    done = subprocess.run([sys.executable, "-c", script], input=text, capture_output=True,
                          text=True, timeout=60, preexec_fn=limit, check=False)
    assert (done.returncode, done.stdout.strip()) == (0, "41"), done.stderr[-500:]


def test_a_file_with_a_syntax_error_contributes_only_that_error(tmp_path: Path) -> None:
    """The frontend lowers while it parses, so it has read the include (and its errors) and
    lowered the first rules by the time it meets the syntax error; none of that remains."""
    (tmp_path / "bad.rules").write_text("define b = $nope\n", encoding="utf-8")
    (tmp_path / "p.rules").write_text(
        'include "bad.rules"\ndefine a = 1\n'
        "table ip filter { chain INPUT { accept dport 99999 } }\n"
        "table ip filter { chain X { accept from } }\n", encoding="utf-8")
    (tmp_path / "q.rules").write_text(  # after p: `a` is free again, and so is chain INPUT
        "define a = 2\ntable ip filter { chain INPUT { accept dport $a } }\n", encoding="utf-8")
    with pytest.raises(RulecError) as info:
        parse_files([tmp_path / "p.rules", tmp_path / "q.rules"])
    assert [(d.code, d.span and d.span.line) for d in info.value.diagnostics] == [("E0101", 4)]
