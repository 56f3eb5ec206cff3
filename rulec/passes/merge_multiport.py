"""Merge rules that differ only in their destination ports (or only in their source ports)
into one rule with the union port set, where first-match order allows.

    before:  accept tcp dport 22              after:  accept tcp dport { 22, 80, 443 }
             drop udp                                 drop udp
             accept tcp dport 80
             accept tcp dport 443
"""

from __future__ import annotations

from rulec.ir.nodes import Ruleset
from rulec.passes.analysis import merge_rules
from rulec.passes.context import PassContext


def merge_multiport(ruleset: Ruleset, ctx: PassContext) -> Ruleset:
    """Merge each rule into the nearest earlier rule of its chain that is equal but for the
    port set of one field (dport, or sport), giving that rule the union.

    Preserves every packet's actions and their order: the later rule's packets now meet its
    action at the earlier rule, so every rule in between must be disjoint from the later rule
    or end the walk with the same action (analysis.may_merge). Refuses negated port sets
    (their union is not the rule's union), rate-limited rules (merging would share one token
    bucket), and rules whose comments differ. The result is unbounded; the iptables backend
    chunks it to multiport's 15 slots. Repeats, alternating dport and sport, until nothing
    merges.

    >>> from rulec.api import parse_text
    >>> from rulec.ir.printer import print_ruleset
    >>> r = parse_text("table ip filter { chain INPUT { accept tcp dport 22\\n"
    ...                "drop udp\\n accept tcp dport 80 } }")
    >>> print(print_ruleset(merge_multiport(r, PassContext())), end="")
    table ip filter {
      chain INPUT {
        accept tcp dport { 22, 80 }
        drop udp
      }
    }
    """
    return merge_rules(ruleset, ("dport", "sport"))
