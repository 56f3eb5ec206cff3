"""The nft text reader gives what `nft -j list ruleset` gives for the same ruleset.

The kernel is the oracle: every golden .nft is loaded into a fresh namespace and listed back as
text and as JSON; the reader applied to the listed text, and to the golden file itself (rulec's
own spelling), must equal that JSON up to what the IR never reads (handles, counter values,
metainfo, the order of set elements).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rulec.diagnostics import RulecError, SourceFile
from rulec.frontends.nft_text import nft_text_to_json
from rulec.kernel import Namespace, available, namespace

CASES = Path(__file__).parent.parent / "golden" / "cases"
GOLDENS = sorted(CASES.glob("**/*.nft"))
NO_KERNEL = (
    "needs root" if os.geteuid() != 0
    else "needs nft" if shutil.which("nft") is None
    else available()
)


def normalise(data: object) -> list[object]:
    """What the IR reads of a listing: no metainfo, handles or counter values; set elements sorted
    (the kernel keeps hash sets in its own order). Everything else compares structurally."""
    assert isinstance(data, dict) and set(data) == {"nftables"}
    out = []
    for obj in data["nftables"]:
        ((kind, body),) = obj.items()
        if kind == "metainfo":
            continue
        body = {k: v for k, v in body.items() if k != "handle"}
        out.append({kind: _values(body)})
    return out


def _values(value: object) -> object:
    if isinstance(value, list):
        return [_values(v) for v in value]
    if isinstance(value, str) and value.endswith(" [invalid type]"):
        # nft 1.0.6 lists `ct original proto-dst { 8080, 8443 }` as untyped hex; same value
        return int(value.split()[0], 16)
    if not isinstance(value, dict):
        return value
    out: dict[str, object] = {}
    for key, item in value.items():
        if key == "counter":
            out[key] = "counter"
        elif key in ("set", "elem") and isinstance(item, list):
            out[key] = sorted((_values(v) for v in item), key=json.dumps)
        else:
            out[key] = _values(item)
    return out


def parse(text: str, name: str = "ruleset.nft") -> dict[str, object]:
    return nft_text_to_json(SourceFile(name, text))[0]


@pytest.fixture
def netns() -> Iterator[Namespace]:
    if NO_KERNEL:
        pytest.skip(f"loading rulesets into a namespace: {NO_KERNEL}")
    with namespace("nftt") as ns:
        yield ns


def listed(ns: Namespace, text: str) -> tuple[str, object]:
    ns.run(["nft", "-f", "-"], input=text)
    return (ns.run(["nft", "list", "ruleset"]).stdout,
            json.loads(ns.run(["nft", "-j", "list", "ruleset"]).stdout))


@pytest.mark.parametrize("golden", GOLDENS, ids=lambda p: str(p.relative_to(CASES)))
def test_golden_and_its_listing_read_as_the_kernel_lists_them(
        netns: Namespace, golden: Path) -> None:
    text, kernel = listed(netns, golden.read_text())
    want = normalise(kernel)
    assert normalise(parse(text, "listed")) == want
    assert normalise(parse(golden.read_text(), str(golden))) == want


# Rulesets of other programs, written from their documented layouts (neither dockerd 29 nor
# firewalld runs here): each file says where its shape comes from.
OTHERS = sorted((Path(__file__).parent / "nft_text").glob("*.nft"))


@pytest.mark.parametrize("path", OTHERS, ids=lambda p: p.stem)
def test_other_programs_rulesets_read_as_the_kernel_lists_them(
        netns: Namespace, path: Path) -> None:
    text, kernel = listed(netns, path.read_text())
    want = normalise(kernel)
    assert normalise(parse(text, "listed")) == want
    assert normalise(parse(path.read_text(), str(path))) == want


HAND_WRITTEN = {
    "sets_and_maps": """
table inet t {
	set allowed {
		type ipv4_addr . inet_service
		flags interval
		elements = { 198.18.0.0/24 . 22 comment "ssh", 198.18.1.1 . 443 }
	}
	map ports {
		type inet_service : verdict
		elements = { 22 : accept, 80 : jump web }
	}
	chain web {
	}
	chain input {
		type filter hook input priority filter - 10; policy drop;
		ip saddr . tcp dport @allowed accept
		tcp dport vmap @ports
		th dport { 53, 5353 } meta l4proto { tcp, udp } counter accept
		ip daddr != { 198.18.0.1, 198.18.0.2 } ip saddr 198.18.0.5-198.18.0.9 drop
		iifname "veth*" oifname != "lo" ct state established,related accept
		icmp type echo-request limit rate 10/second burst 20 packets accept
		icmpv6 type { nd-neighbor-solicit, nd-router-advert } accept
		meta nfproto ipv6 meta mark 0x00000010 log prefix "m: " level warn
		tcp flags & (syn|ack) == syn reject with tcp reset
		ip protocol udp reject with icmp type port-unreachable
		tcp dport 2 quota over 10 mbytes drop
	}
}
table ip n {
	chain pre {
		type nat hook prerouting priority dstnat; policy accept;
		tcp dport 8080 dnat to 198.18.2.2:80
		udp dport 53 redirect to :5353
	}
	chain post {
		type nat hook postrouting priority srcnat + 5; policy accept;
		oifname "eth0" masquerade
		ip saddr 198.18.0.0/16 snat to 198.51.100.1
	}
	chain mangle {
		type filter hook forward priority mangle; policy accept;
		tcp flags syn / syn,rst tcp option maxseg size set rt mtu
		meta mark set 0x00000002
	}
}
""",
}


@pytest.mark.parametrize("name", sorted(HAND_WRITTEN))
def test_hand_written_rulesets_read_as_the_kernel_lists_them(netns: Namespace, name: str) -> None:
    text, kernel = listed(netns, HAND_WRITTEN[name])
    want = normalise(kernel)
    assert normalise(parse(text, "listed")) == want


def test_locate_points_at_an_expression_in_the_text() -> None:
    source = SourceFile("r.nft", 'table ip t {\n\tchain c {\n\t\ttcp dport 22 accept\n\t}\n}\n')
    data, locate = nft_text_to_json(source)
    objects = data["nftables"]
    assert isinstance(objects, list)
    rule = next(i for i, o in enumerate(objects) if "rule" in o)
    span = locate(("nftables", rule, "rule", "expr", 1))
    assert span is not None and (span.line, span.column) == (3, 16)
    assert source.text[span.start:span.end] == "accept"
    whole = locate(("nftables", rule, "rule", "expr", 0, "match", "right"))
    assert whole is not None and source.text[whole.start:whole.end] == "tcp dport 22"


@pytest.mark.parametrize(("text", "code", "line", "column", "word"), [
    ("table ip t {\n\tchain c {\n\t\tfrobnicate 3 accept\n\t}\n}\n", "E0562", 3, 3, "frobnicate"),
    ('table ip t {\n\tchain c {\n\t\tlog prefix "x\n', "E0560", 3, 14, ""),
    ("table ip t {\n\tchain c {\n\t\tlimit rate fast accept\n\t}\n}\n", "E0563", 3, 14, "fast"),
    ("table ip t {\n\tchain c {\n\t\ttype filter hook input priority loud;\n", "E0563", 3, 35,
     "loud"),
    ("table ip t {\n\tchain c {\n\t\tip saddr accept\n\t}\n}\n", "E0561", 3, 12, "accept"),
    ("table ip t {\n\tchain c {\n\t\taccept\n", "E0561", 4, 1, "end of input"),
    ("table ip t {\n\tfrob x\n}\n", "E0562", 2, 2, "frob"),
    ("list ruleset\n", "E0562", 1, 1, "list"),
    ("table ip t {\n\tchain c {\n\t\ttcp dport 22 ~ accept\n", "E0560", 3, 16, ""),
])
def test_syntax_errors_are_positioned(
        text: str, code: str, line: int, column: int, word: str) -> None:
    with pytest.raises(RulecError) as caught:
        parse(text)
    (diagnostic,) = caught.value.diagnostics
    assert diagnostic.code == code
    assert diagnostic.span is not None
    assert (diagnostic.span.line, diagnostic.span.column) == (line, column)
    assert word in diagnostic.message


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(GOLDENS), st.data())
def test_mutated_goldens_parse_or_fail_with_our_error(golden: Path, data: st.DataObject) -> None:
    text = golden.read_text()
    start = data.draw(st.integers(0, len(text)))
    length = data.draw(st.integers(0, 12))
    insert = data.draw(st.text(alphabet=' \n\t{}[]()";:,.-/@!=<>&|^*#\\abc019', max_size=6))
    mutated = text[:start] + insert + text[start + length:]
    try:
        parse(mutated)
    except RulecError as error:
        assert error.diagnostics and all(d.span is not None for d in error.diagnostics)
