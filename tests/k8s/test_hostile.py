"""Hostile YAML and JSON in policy and inventory files: each is a clean error with file, line,
column, the object and the path inside it (exit 1, never rulec's internal error, exit 3), and
none costs memory or time out of proportion to its size."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rulec import cli
from rulec.frontends.k8s import source
from rulec.frontends.k8s.source import MAX_DEPTH

ROOT = Path(__file__).resolve().parents[2]
INVENTORY = "namespaces: [{name: x}]\npods:\n  - {name: a, namespace: x, ip: 198.18.0.2}\n"
POLICY = ("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
          "metadata: {namespace: x, name: web}\nspec: {}\n")


def run(tmp_path: Path, policy: str | bytes = POLICY,
        inventory: str | bytes = INVENTORY) -> tuple[int, str, str]:
    for name, text in (("cluster.yaml", inventory), ("policy.yaml", policy)):
        data = text if isinstance(text, bytes) else text.encode("utf-8")
        (tmp_path / name).write_bytes(data)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["compile", "--inventory", str(tmp_path / "cluster.yaml"),
                         str(tmp_path / "policy.yaml"), "--target", "nft"])
    return code, out.getvalue(), err.getvalue()


def first_error(err: str) -> re.Match[str]:
    """`file:line:col: error[CODE]: message` of the first diagnostic; fails if it has none."""
    found = re.search(r"^(\S+?):(\d+):(\d+): error\[(E06\d\d)\]: (.*)$", err, re.M)
    assert found is not None, err
    return found


def position(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


# The three reported crashes, each placed in a label value of a policy and of an inventory,
# as YAML and as JSON. `@` marks where the hazard goes.
HAZARDS = {
    "control-character": ("we\x01b", "E0601", "control character U+0001"),
    "deep-nesting": ("[" * 10_000 + "]" * 10_000, "E0611", f"nested more than {MAX_DEPTH}"),
    "5000-digit-integer": ("9" * 5000, "E0612", "the number 999999999999...(5,000 characters)"),
}
FILES = {
    "policy-yaml": ("policy", POLICY.replace("spec: {}", "spec:\n  podSelector:\n"
                                             "    matchLabels: {app: @}"),
                    "x/web: spec.podSelector.matchLabels.app"),
    "policy-json": ("policy", json.dumps({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"namespace": "x", "name": "web"},
        "spec": {"podSelector": {"matchLabels": {"app": "@"}}}}, indent="\t"),
                    "x/web: spec.podSelector.matchLabels.app"),
    "inventory-yaml": ("inventory", INVENTORY.replace("198.18.0.2}", "198.18.0.2, "
                                                      "labels: {app: @}}"),
                       "x/a: pods[0].labels.app"),
    "inventory-json": ("inventory", json.dumps({
        "namespaces": [{"name": "x"}],
        "pods": [{"name": "a", "namespace": "x", "ip": "198.18.0.2",
                  "labels": {"app": "@"}}]}, indent=2), "x/a: pods[0].labels.app"),
}


@pytest.mark.parametrize("file", FILES)
@pytest.mark.parametrize("hazard", HAZARDS)
def test_reported_crashes_are_positioned_errors(hazard: str, file: str,
                                                tmp_path: Path) -> None:
    raw, code, message = HAZARDS[hazard]
    which, template, where = FILES[file]
    # In JSON the hazard replaces the quoted string, but a control character stays quoted.
    hole = '"@"' if file.endswith("json") and hazard != "control-character" else "@"
    text = template.replace(hole, raw)
    name = "policy.yaml" if which == "policy" else "cluster.yaml"
    status, out, err = run(tmp_path, **{which: text})
    assert (status, out) == (cli.EXIT_POLICY, ""), err
    assert "internal error" not in err
    found = first_error(err)
    assert found[1].endswith(name) and found[4] == code, err
    assert found[5].startswith(f"{where}"), found[0]
    assert message in found[5], found[0]
    offset = text.index(raw) + (raw.index("\x01") if hazard == "control-character" else 0)
    if hazard == "deep-nesting":  # the hole is 4 levels deep in each file
        offset = text.index(raw) + MAX_DEPTH - 4  # the bracket that opens level MAX_DEPTH + 1
    assert (int(found[2]), int(found[3])) == position(text, offset), found[0]


# Other hostile or odd input: (policy or inventory text, the code of the first error, or None
# when it must compile).
HEAD = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {namespace: x, name: w}\n"
PORT = HEAD + "spec: {ingress: [{ports: [{port: @}]}]}\n"
ODD: dict[str, tuple[str, str | bytes, str | None]] = {
    "huge-hex-port": ("policy", PORT.replace("@", "0x" + "f" * 5000), "E0612"),
    "huge-binary-port": ("policy", PORT.replace("@", "0b" + "1" * 20000), "E0612"),
    "huge-negative-port": ("policy", PORT.replace("@", "-" + "9" * 5000), "E0612"),
    "huge-end-port": ("policy", PORT.replace("@", "80, endPort: " + "9" * 5000), "E0612"),
    "int64-overflow-port": ("policy", PORT.replace("@", str(1 << 64)), "E0612"),
    "huge-container-port": ("inventory", INVENTORY.replace("2}", "2, ports: [{port: "
                                                           + "9" * 5000 + "}]}"), "E0612"),
    "huge-integer-in-a-key": ("policy", HEAD + "spec: {}\nstatus: {" + "9" * 5000 + ": 1}\n",
                              "E0612"),
    "huge-integer-in-status": ("policy", HEAD + "spec: {}\nstatus: " + "9" * 5000 + "\n",
                               "E0612"),
    "float-port": ("policy", PORT.replace("@", "80.5"), "E0604"),
    "nan-port": ("policy", PORT.replace("@", ".nan"), "E0604"),
    "inf-port": ("policy", PORT.replace("@", "-.inf"), "E0604"),
    "exponent-port": ("policy", PORT.replace("@", "1e3"), "E0604"),  # go-yaml: a float
    "base-60-port": ("policy", PORT.replace("@", "1:30"), "E0607"),  # go-yaml: a string
    "python-tag": ("policy", HEAD + "spec: !!python/object/apply:os.system [\"touch MARK\"]\n",
                   "E0612"),
    "python-scalar-tag": ("policy", HEAD + "spec: {}\nstatus: !!python/name:os.system\n",
                          "E0612"),
    "local-tag": ("policy", HEAD + "spec: !foo {}\n", "E0612"),
    "set-tag": ("policy", HEAD + "spec: !!set {a, b}\n", "E0612"),
    "binary-tag": ("inventory", INVENTORY.replace("198.18.0.2", "!!binary MTk4LjE4LjAuMg=="),
                   "E0612"),
    "bad-int-tag": ("policy", PORT.replace("@", "!!int eighty"), "E0612"),
    "str-tag": ("policy", PORT.replace("@", "!!str 80"), "E0607"),  # a string of digits
    "non-string-keys": ("policy", HEAD + "spec: {1: 2, [a]: b, {x: 1}: c, null: d, on: e}\n",
                        "E0604"),
    "duplicate-keys": ("policy", HEAD + "spec: {}\nspec: {}\n", "E0610"),
    "duplicate-keys-inventory": ("inventory", INVENTORY + "pods: []\n", "E0610"),
    "recursive-alias": ("policy", HEAD + "spec: &a {ingress: [*a]}\n", "E0612"),
    "undefined-alias": ("policy", HEAD + "spec: *nowhere\n", "E0601"),
    "merge-of-a-scalar": ("policy", HEAD + "spec:\n  <<: 5\n", "E0601"),
    "nul-character": ("policy", POLICY + "\x00", "E0601"),
    "control-in-comment": ("inventory", INVENTORY + "# \x1b[31m red\n", "E0601"),
    "bidi-and-del": ("policy", POLICY.replace("web", "w\x7feb"), "E0601"),
    "invalid-utf8": ("policy", POLICY.encode() + b"status: \xff\xfe\n", "E0601"),
    "binary-file": ("inventory", bytes(range(256)) * 4, "E0601"),
    "utf16-file": ("policy", POLICY.encode("utf-16"), "E0601"),
    "null-everywhere": ("policy", "apiVersion: null\nkind: NetworkPolicy\nmetadata: null\n"
                        "spec: null\n", "E0602"),
    "null-rules": ("policy", HEAD + "spec: {podSelector: null, ingress: [null, {from: [null], "
                   "ports: [null]}], egress: null}\n", "E0604"),
    "null-inventory": ("inventory", "namespaces: [null, {name: null, labels: null}]\n"
                       "pods: [null, {name: a, namespace: x, ip: null, ports: null}]\n", "E0604"),
    "scalar-inventory": ("inventory", "5\n", "E0604"),
    "empty-inventory": ("inventory", "", "E0602"),
    "only-comments-inventory": ("inventory", "# nothing\n---\n...\n", "E0602"),
    "empty-policy-file": ("policy", "", None),
    "empty-documents": ("policy", "---\n---\n...\n---\n~\n", None),
    "bom": ("policy", "\ufeff" + POLICY, None),
    "json-with-tabs": ("policy", json.dumps({"apiVersion": "networking.k8s.io/v1",
                                             "kind": "NetworkPolicy", "metadata": {
                                                 "namespace": "x", "name": "j"},
                                             "spec": {}}, indent="\t"), None),
    "json-with-bom-and-tabs": ("policy", "\ufeff" + json.dumps({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"namespace": "x", "name": "j"}, "spec": {}}, indent="\t"), None),
    "json-duplicate-keys": ("policy", '{"apiVersion": "networking.k8s.io/v1", "kind": '
                            '"NetworkPolicy", "kind": "NetworkPolicy", "spec": {}}', "E0610"),
    "json-huge-exponent": ("policy", json.dumps({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"namespace": "x", "name": "j"},
        "spec": {"ingress": [{"ports": [{"port": 80}]}]}}).replace("80", "1e400"), None),
    "aliases-and-merge-keys": ("policy", HEAD + "spec:\n  <<: &s {podSelector: {}}\n"
                               "  ingress: [{from: [&p {podSelector: {}}, *p]}]\n", None),
    "timestamp-label": ("policy", HEAD + "spec: {podSelector: {matchLabels: "
                        "{day: 2024-01-01}}}\n", None),  # go-yaml keeps it a string
}


@pytest.mark.parametrize("name", ODD)
def test_odd_input_compiles_or_is_a_positioned_error(name: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    which, text, code = ODD[name]
    monkeypatch.chdir(tmp_path)  # where `touch MARK` would land, were a tag ever executed
    status, out, err = run(tmp_path, **{which: text})
    assert "internal error" not in err and "Traceback" not in err
    if code is None:
        assert status == cli.EXIT_OK, err
        return
    assert (status, out) == (cli.EXIT_POLICY, ""), err
    assert first_error(err)[4] == code, err
    assert not (tmp_path / "MARK").exists()


def test_a_file_of_control_characters_reports_a_few(tmp_path: Path) -> None:
    status, _, err = run(tmp_path, inventory="\x00" * 100_000)
    assert status == cli.EXIT_POLICY
    assert err.count("control character U+0000 is not allowed") == 10
    assert "cluster.yaml:1:11: error[E0601]: 99,990 more control characters, from here on, " \
        "are not shown" in err


@pytest.mark.parametrize("layout", ["block", "flow"])
def test_a_file_of_many_errors_stops_after_200(layout: str, tmp_path: Path) -> None:
    """A million bad keys would take minutes and print gigabytes; the first 200 say enough."""
    keys = [f"k{i}: 1" for i in range(10_000)]
    spec = ("spec:\n" + "".join(f"  {k}\n" for k in keys) if layout == "block"
            else "spec: {" + ", ".join(keys) + "}\n")
    status, _, err = run(tmp_path, policy=HEAD + spec)
    assert status == cli.EXIT_POLICY
    assert err.count("error[E0603]: x/w: spec.k") == 200
    last = re.findall(r"^(\S+):(\d+):(\d+): error\[E0611\]: more than 200 errors and warnings "
                      r"in \S+policy.yaml; the rest of the file is not read$", err, re.M)
    assert len(last) == 1, err[-2000:]
    assert err.endswith("rulec: 201 errors; nothing was emitted\n")


def test_an_alias_in_a_value_is_read_like_the_anchor(tmp_path: Path) -> None:
    """Aliases are allowed (go-yaml reads them); an error inside an aliased value points at
    the anchor's text, with the path of the alias."""
    policy = HEAD + "spec:\n  ingress:\n    - ports: &p [{port: 0}]\n    - ports: *p\n"
    status, _, err = run(tmp_path, policy=policy)
    assert status == cli.EXIT_POLICY
    assert "w: spec.ingress[0].ports[0].port: port 0 is out of range" in err
    assert "w: spec.ingress[1].ports[0].port: port 0 is out of range" in err
    assert err.count("policy.yaml:6:25:") == 2


@pytest.mark.skipif(source.FastLoader is None, reason="PyYAML without libyaml reads with "
                    "the pure-Python parser only")
def test_a_syntax_error_far_into_a_document_is_not_read_again() -> None:
    """The pure-Python parser (for messages that do not depend on libyaml) reads ~0.1-0.4 MB/s:
    a typo at the end of a 5 MB inventory took a minute. Past MAX_REREAD into the failing
    document libyaml's own message is kept; before it, and in a later small document, the
    message is PyYAML's, at the same place."""
    from rulec.diagnostics import Collector, SourceFile

    def message(text: str) -> tuple[str, int]:
        out = Collector()
        source.documents(SourceFile("f.yaml", text), out)
        [diagnostic] = out.items
        assert diagnostic.span is not None
        return diagnostic.message, diagnostic.span.start

    bad = "pods:\n  - {a: 1\n  b: 2\n"  # PyYAML: expected ',' or '}', but got ':'
    far = "x: [" + "1, " * (source.MAX_REREAD // 3) + "]\n"
    small, big = message(bad), message(far + bad)
    assert "but got ':'" in small[0] and "but got" not in big[0]
    assert big[1] - small[1] == len(far)
    later = message(far + "---\n" + bad)  # the big first document is fine: only the second
    assert later == (small[0], small[1] + len(far) + 4)


BOMB_LEVELS = "abcdefghi"


def alias_bomb(indent: str) -> str:
    """The classic: nine levels of nine aliases each, 9^9 = 387,420,489 strings; 450 bytes."""
    lines = [f'{indent}a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, cur in itertools.pairwise(BOMB_LEVELS):
        lines.append(f"{indent}{cur}: &{cur} [" + ",".join(f"*{prev}" for _ in range(9)) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("which", ["policy", "inventory"])
def test_an_alias_bomb_is_refused(which: str, tmp_path: Path) -> None:
    """In a child whose address space is capped at 1 GiB (the expansion needs 4.8 GB), so that
    an unbounded expansion fails the test instead of the machine."""
    bomb = alias_bomb("  ")
    assert len(bomb.encode()) < 450
    policy = POLICY + ("status:\n" + bomb if which == "policy" else "")
    inventory = INVENTORY + ("extra:\n" + bomb if which == "inventory" else "")
    (tmp_path / "policy.yaml").write_text(policy, encoding="utf-8")
    (tmp_path / "cluster.yaml").write_text(inventory, encoding="utf-8")
    limit = "import resource; resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30)); "
    done = subprocess.run(
        [sys.executable, "-c", limit + "from rulec.cli import main; raise SystemExit(main())",
         "compile", "--inventory", "cluster.yaml", "policy.yaml", "-t", "nft"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == cli.EXIT_POLICY, done.stderr[-2000:]
    found = first_error(done.stderr)
    assert found[4] == "E0611" and "aliases repeat" in found[5], done.stderr
    assert found[1] == ("policy.yaml" if which == "policy" else "cluster.yaml")


# Scalars resolve as Kubernetes' reader (go-yaml v2) resolves them, where PyYAML's YAML 1.1
# differs: no base 60, timestamps stay strings, 0o octal, a bare exponent is a float.
@pytest.mark.parametrize(("text", "value"), [
    ("80", 80), ("+80", 80), ("-1", -1), ("0", 0), ("1_000", 1000), ("0x1F", 31), ("017", 15),
    ("0o17", 15), ("0b101", 5), ("-0b101", -5), ("09", 9.0), ("1e3", 1000.0), ("1.5", 1.5),
    (".5", 0.5), ("1.", 1.0), ("1e400", "1e400"), ("1:30", "1:30"), ("2024-01-01", "2024-01-01"),
    ("true", True), ("Off", False), ("~", None), ("", None), ("null", None), ("y", "y"),
    ("n", "n"), (".inf", math.inf), ("-.Inf", -math.inf), ("<<", "<<"), ("=", "="),
    ("-", "-"), ("0x", "0x"), ("http", "http"), (str((1 << 64) - 1), (1 << 64) - 1),
    (str(-(1 << 63)), -(1 << 63)),
])
def test_plain_scalars_resolve_as_go_yaml_does(text: str, value: object) -> None:
    got = source.resolve_plain(text)
    assert got == value and type(got) is type(value)


def test_nan_resolves_to_nan() -> None:
    assert math.isnan(source.resolve_plain(".NaN"))


@pytest.mark.parametrize("text", [str(1 << 64), str(-(1 << 63) - 1), "+" + str(1 << 63),
                                  "9" * 5000, "0x" + "f" * 17, "0b" + "1" * 65, "0" + "7" * 23])
def test_integers_past_64_bits_are_out_of_range(text: str) -> None:
    with pytest.raises(source.OutOfRange):
        source.resolve_plain(text)
