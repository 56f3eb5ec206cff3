"""The interval structures behind the passes' indexes answer as brute force over plain lists
does: the blocked sorted Column (remove_shadowed, merge_rules) and the merged lines of a
merged field (merge_rules), and what merge_rules relies on those lines for."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from rulec.passes.analysis import Column, _line, _widen, disjoint, meet
from tests.passes.strategies import Case, cases
from tests.passes.test_semantics import PROPERTY

_INTERVAL = st.tuples(st.integers(0, 200), st.integers(0, 6)).map(lambda t: (t[0], t[0] + t[1]))


@settings(max_examples=300, deadline=None)
@given(lows=st.lists(st.integers(0, 40), max_size=3000),
       queries=st.lists(st.tuples(st.integers(-5, 45), st.integers(0, 20)), max_size=20))
def test_a_column_counts_and_lists_as_one_sorted_list(
        lows: list[int], queries: list[tuple[int, int]]) -> None:
    """Blocks split as they fill (so that inserts stay cheap); range queries still see every
    entry once, whatever the insert order and however many equal lows span blocks."""
    column = Column()
    for cid, low in enumerate(lows):
        column.insert(low, (low, cid))
    assert [low for block in column.lows for low in block] == sorted(lows)
    assert column.firsts == [block[0] for block in column.lows]
    for start, width in queries:
        inside = sorted(cid for cid, low in enumerate(lows) if start <= low <= start + width)
        assert column.count(start, start + width) == len(inside)
        assert sorted(cid for _, cid in column.between(start, start + width)) == inside


def _points(intervals: list[tuple[int, int]]) -> set[int]:
    return {p for low, high in intervals for p in range(low, high + 1)}


@settings(max_examples=300, deadline=None)
@given(added=st.lists(_INTERVAL, max_size=60), query=st.lists(_INTERVAL, max_size=4))
def test_a_widened_line_holds_every_interval_merged_andmeet_by_bisection(
        added: list[tuple[int, int]], query: list[tuple[int, int]]) -> None:
    line: list[tuple[int, int]] = []
    for low, high in added:
        _widen(line, low, high)
    assert _points(line) == _points(added)
    # Sorted, disjoint, not adjacent: what meet() and a set's canonical form assume.
    assert all(a[1] + 1 < b[0] for a, b in itertools.pairwise(line))
    assert all(low <= high for low, high in line)
    query_line: list[tuple[int, int]] = []
    for low, high in query:
        _widen(query_line, low, high)
    # Both ways round: few against many takes meet()'s other road.
    overlap = bool(_points(line) & _points(query_line))
    assert meet(line, query_line) == overlap and meet(query_line, line) == overlap


@PROPERTY
@given(case=cases())
def test_values_apart_on_the_line_make_rules_disjoint(case: Case) -> None:
    """merge_rules tests a new member only against rules whose merged field's value meets
    its own on the field's line: the others must be disjoint() from it, whatever else they
    match, with or without marks."""
    rules = [r for t in case.ruleset.tables for c in t.chains for r in c.rules]
    for name in ("saddr", "daddr", "sport", "dport", "icmp_type"):
        for a, b in itertools.product(rules, repeat=2):
            line_a = _line(name, getattr(a.match, name))
            line_b = _line(name, getattr(b.match, name))
            if line_a is not None and line_b is not None and not meet(line_a, line_b):
                assert disjoint(a.match, b.match) and disjoint(a.match, b.match, marks=False)
