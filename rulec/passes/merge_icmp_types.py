"""Merge rules that differ only in their ICMP (or ICMPv6) type into one rule with the union
type set, where first-match order allows.

    before:  accept icmpv6 type packet-too-big
             accept icmpv6 type echo-request limit 10/second
             accept icmpv6 type time-exceeded
    after:   accept icmpv6 type { packet-too-big, time-exceeded }
             accept icmpv6 type echo-request limit 10/second

`nft -o` merges only adjacent rules, so a rate-limited echo-request between the error types
and the neighbour-discovery types (the usual host firewall) stops it; rulec's merge crosses
any rule disjoint from the one it moves.
"""

from __future__ import annotations

from rulec.ir.nodes import Ruleset
from rulec.passes.analysis import merge_rules
from rulec.passes.context import PassContext


def merge_icmp_types(ruleset: Ruleset, ctx: PassContext) -> Ruleset:
    """Merge each rule into the nearest earlier rule of its chain that is equal but for its
    icmp type set, giving that rule the union.

    Preserves every packet's actions and their order under merge_multiport's condition
    (analysis.may_merge). Refuses negated type sets, rate-limited rules and rules whose
    comments differ. Equal rules but for the type have the same protocol, so the same ICMP
    family. nft prints the set as `icmp type { ... }`; iptables, whose icmp match takes one
    type, gets one line per type.

    >>> from rulec.api import parse_text
    >>> from rulec.ir.printer import print_ruleset
    >>> r = parse_text("table ip filter { chain INPUT { accept icmp type echo-request\\n"
    ...                "drop tcp\\n accept icmp type destination-unreachable } }")
    >>> print(print_ruleset(merge_icmp_types(r, PassContext())), end="")
    table ip filter {
      chain INPUT {
        accept icmp type { destination-unreachable, echo-request }
        drop tcp
      }
    }
    """
    return merge_rules(ruleset, ("icmp_type",))
