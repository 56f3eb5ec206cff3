"""Which source terms a rule, and each element of its sets, comes from, once rules merge.

A term is a source rule's comment (with `--provenance`, its file:line too). A rule as
written has one term, its comment. When the optimiser merges rules whose comments differ,
the merged rule keeps all their terms in `Rule.terms`, its `comment` becomes a summary of
them, and each element of its address and port sets (`notes`, aligned with the elements)
names the terms it comes from. A set without notes has every element from all of the rule's
terms. Backends print an element's terms as that element's comment where the target has
element comments (nft sets and maps, ipset entries), so review and `explain` can name the
term behind every element; the summary is what a target without them keeps.

Notes never take part in equality: they change no packet's fate, like spans.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import replace
from typing import Any

from rulec.ir.nodes import Rule
from rulec.ir.values import AddressSet, PortSet, Terms, join_terms

# The match fields whose elements carry notes.
NOTED_FIELDS = ("saddr", "daddr", "sport", "dport")

# nft's limit on a rule's or an element's comment, the smallest of the targets' (iptables
# allows 255): a summary always fits it.
MAX_NOTE_BYTES = 128


def terms_of(rule: Rule) -> Terms:
    """The terms behind `rule`: those merged into it, else its comment (if any)."""
    if rule.terms:
        return rule.terms
    return (rule.comment,) if rule.comment is not None else ()


def element_terms(value: AddressSet | PortSet, rule_terms: Terms) -> Sequence[Terms]:
    """Each element's terms, aligned with its elements; `rule_terms` where it has no notes."""
    if value.notes:
        return value.notes
    count = len(value.prefixes) if isinstance(value, AddressSet) else len(value.ranges)
    return (rule_terms,) * count


def summary(terms: Terms, limit: int = MAX_NOTE_BYTES) -> str | None:
    """The terms as one comment of at most `limit` bytes: all of them, or as many as fit
    and how many more there are (`t1, t2 (+98 more)`)."""
    if not terms:
        return None
    whole = ", ".join(terms)
    if len(terms) == 1 or len(whole.encode()) <= limit:
        return _fit(whole, limit)
    shown: list[str] = []
    used = 0
    for i, term in enumerate(terms):
        suffix = f" (+{len(terms) - i - 1} more)" if i < len(terms) - 1 else ""
        cost = len(term.encode()) + (2 if shown else 0)
        if used + cost + len(suffix.encode()) > limit:
            break
        shown.append(term)
        used += cost
    if not shown:  # one long term: cut it
        rest = f" (+{len(terms) - 1} more)"
        return _fit(terms[0], limit - len(rest.encode())) + rest
    return ", ".join(shown) + f" (+{len(terms) - len(shown)} more)"


def _fit(text: str, limit: int) -> str:
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[:limit - 3].decode(errors="ignore") + "…"


def merged_terms(rules: Iterable[Rule]) -> Terms:
    return join_terms(*(terms_of(r) for r in rules))


def merged_comment(terms: Terms) -> dict[str, Any]:
    """The Rule fields of a rule standing for `terms`."""
    return {"comment": summary(terms), "terms": terms if len(terms) > 1 else ()}


def joined_notes(values: Sequence[Any], own: Sequence[Terms]) -> Any:
    """Equal sets (up to notes) of rules with terms `own`, as one set whose elements name
    the terms of every rule's element."""
    per = [element_terms(v, t) for v, t in zip(values, own, strict=True)]
    return replace(values[0], notes=tuple(join_terms(*column)
                                          for column in zip(*per, strict=True)))


def without_redundant(value: Any, terms: Terms) -> Any:
    """`value` without notes if every element names all of `terms` (what no notes say)."""
    return replace(value, notes=()) if all(t == terms for t in value.notes) else value


def rest_notes(rules: Sequence[Rule], skip: Iterable[str]) -> dict[str, Any]:
    """For rules becoming one that tests their equal (up to notes) sets of the noted fields
    outside `skip`: those sets, naming the terms of every rule's element where they tell
    more than the merged rule's terms."""
    own = [terms_of(r) for r in rules]
    terms = join_terms(*own)
    out = {}
    for name in NOTED_FIELDS:
        values = [getattr(r.match, name) for r in rules]
        if name in skip or values[0] is None or not any(v.notes for v in values):
            continue  # unnoted: every element from all the terms already
        value = without_redundant(joined_notes(values, own), terms)
        if value.notes:
            out[name] = value
    return out


def shared_terms(groups: Iterable[Collection[str]]) -> Terms:
    """The terms every group holds, in the order of the first (a sequence): those behind one
    combination of elements of several noted sets."""
    shared: Terms | None = None
    for group in groups:
        shared = tuple(group) if shared is None else tuple(t for t in shared if t in group)
    return shared or ()


__all__ = ["MAX_NOTE_BYTES", "NOTED_FIELDS", "element_terms", "joined_notes", "merged_comment",
           "merged_terms", "rest_notes", "shared_terms", "summary", "terms_of",
           "without_redundant"]
