"""Interval sets: sorted, disjoint, non-adjacent tuples of inclusive (low, high) pairs, the
one algebra remove_shadowed and the analysis engine both judge fields with."""

from __future__ import annotations

from collections.abc import Iterable

Interval = tuple[int, int]
Intervals = tuple[Interval, ...]


def merge(items: Iterable[Interval]) -> Intervals:
    """Sorted, with overlapping and adjacent intervals joined."""
    out: list[Interval] = []
    for low, high in sorted(items):
        if out and low <= out[-1][1] + 1:
            if high > out[-1][1]:
                out[-1] = (out[-1][0], high)
        else:
            out.append((low, high))
    return tuple(out)


def points(values: Iterable[int]) -> Intervals:
    return merge((v, v) for v in values)


def complement(value: Intervals, low: int, high: int) -> Intervals:
    """[low, high] minus `value`."""
    out: list[Interval] = []
    start = low
    for a, b in value:
        if a > start:
            out.append((start, a - 1))
        start = max(start, b + 1)
    if start <= high:
        out.append((start, high))
    return tuple(out)


def intersect(x: Intervals, y: Intervals) -> Intervals:
    if len(x) == 1 and len(y) == 1:
        low, high = max(x[0][0], y[0][0]), min(x[0][1], y[0][1])
        return ((low, high),) if low <= high else ()
    out: list[Interval] = []
    i = j = 0
    while i < len(x) and j < len(y):
        low, high = max(x[i][0], y[j][0]), min(x[i][1], y[j][1])
        if low <= high:
            out.append((low, high))
        if x[i][1] < y[j][1]:
            i += 1
        else:
            j += 1
    return tuple(out)


def within(x: Intervals, y: Intervals) -> bool:
    """x is a subset of y (x not empty)."""
    if len(y) == 1:
        return y[0][0] <= x[0][0] and x[-1][1] <= y[0][1]
    j = 0
    for low, high in x:
        while j < len(y) and y[j][1] < low:
            j += 1
        if j == len(y) or y[j][0] > low or y[j][1] < high:
            return False
    return True


def contains(intervals: Intervals, value: int) -> bool:
    return any(low <= value <= high for low, high in intervals)
