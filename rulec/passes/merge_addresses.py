"""Merge rules that differ only in their source addresses (or only in their destination
addresses) into one rule with the union address set, where first-match order allows.

    before:  accept from 10.0.0.1 tcp dport 22     after:  accept from { 10.0.0.1, 10.0.0.9 }
             drop from 192.168.0.0/16                             tcp dport 22
             accept from 10.0.0.9 tcp dport 22             drop from 192.168.0.0/16
"""

from __future__ import annotations

from rulec.ir.nodes import Ruleset
from rulec.passes.analysis import merge_rules
from rulec.passes.context import PassContext


def merge_addresses(ruleset: Ruleset, ctx: PassContext) -> Ruleset:
    """Merge each rule into the nearest earlier rule of its chain that is equal but for the
    address set of one field (saddr, or daddr), giving that rule the collapsed union.

    Preserves every packet's actions and their order, under the same condition as
    merge_multiport (analysis.may_merge): every rule in between is disjoint from the later
    rule or ends the walk with the same action. Refuses negated sets, rate-limited rules and
    rules whose comments differ. A union may hold both families (in an inet table); backends
    split it per family. Repeats, alternating saddr and daddr, until nothing merges.

    >>> from rulec.api import parse_text
    >>> from rulec.ir.printer import print_ruleset
    >>> r = parse_text("table ip filter { chain INPUT { drop from 10.0.0.0/25\\n"
    ...                "accept from 192.168.0.1\\n drop from 10.0.0.128/25 } }")
    >>> print(print_ruleset(merge_addresses(r, PassContext())), end="")
    table ip filter {
      chain INPUT {
        drop from 10.0.0.0/24
        accept from 192.168.0.1
      }
    }
    """
    return merge_rules(ruleset, ("saddr", "daddr"))
