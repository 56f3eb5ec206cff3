"""ipBlock subtraction (S12): the sweep equals a plain ipaddress-based subtraction on random
blocks and excepts (nested, overlapping, repeated, in any order), and its answer is canonical:
the fewest disjoint prefixes, sorted, which collapse() leaves alone."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from rulec.frontends.k8s.compiler import collapse, subtract
from rulec.frontends.k8s.model import IPBlock
from rulec.ir.values import Family, Prefix

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def network(prefix: Prefix) -> Network:
    return ipaddress.ip_network((prefix.network, prefix.length))


def reference(block: IPBlock) -> list[Network]:
    """Take each except out of every piece, as the old implementation did, with ipaddress."""
    pieces = [network(block.cidr)]
    for cut in map(network, block.excepts):
        kept: list[Network] = []
        for piece in pieces:
            if piece.subnet_of(cut):
                continue
            if cut.subnet_of(piece):
                kept.extend(piece.address_exclude(cut))
            else:
                kept.append(piece)  # prefixes nest or are disjoint
        pieces = kept
    return sorted(ipaddress.collapse_addresses(pieces))


@st.composite
def blocks(draw: st.DrawFn) -> IPBlock:
    family = draw(st.sampled_from([Family.IP, Family.IP6]))
    bits = family.bits
    # Short enough that the reference stays quick, long enough that excepts crowd it.
    length = draw(st.integers(bits - 16, bits - 1))
    base = draw(st.integers(0, (1 << length) - 1)) << (bits - length)
    cidr = Prefix(family, base, length)

    def inside() -> st.SearchStrategy[Prefix]:
        def build(cut: int, offset: int) -> Prefix:
            host = bits - cut
            return Prefix(family, base + ((offset >> host) << host), cut)

        return st.builds(build, st.integers(length, bits), st.integers(0, (1 << (bits - length))
                                                                        - 1))

    excepts = draw(st.lists(inside(), max_size=40))
    # Repeats, and sometimes the cidr itself (the model refuses it; subtract must not care).
    excepts += draw(st.lists(st.sampled_from(excepts), max_size=5)) if excepts else []
    return IPBlock(cidr, tuple(draw(st.permutations(excepts))))


@settings(max_examples=max(300, settings.default.max_examples))
@given(blocks())
def test_subtract_equals_the_ipaddress_reference(block: IPBlock) -> None:
    got = subtract(block)
    assert [network(p) for p in got] == reference(block)
    assert collapse(got) == got


def test_nested_and_overlapping_excepts() -> None:
    cidr = Prefix.parse("10.0.0.0/8")
    excepts = tuple(map(Prefix.parse, ("10.1.0.0/16", "10.1.2.0/24", "10.1.0.0/16",
                                       "10.0.0.0/32", "10.255.255.255/32", "10.128.0.0/9")))
    block = IPBlock(cidr, excepts)
    assert [network(p) for p in subtract(block)] == reference(block)
    assert subtract(IPBlock(cidr, (cidr,))) == ()
    assert subtract(IPBlock(cidr, ())) == (cidr,)
