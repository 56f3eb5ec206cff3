"""A hand-built nft tree with three-field concatenations (a named set, an anonymous set, a
verdict map) and element comments: what the IR cannot produce yet, printed both ways."""

from __future__ import annotations

from rulec.backends.nft.tree import ChainTree, Json, Script, TableTree, set_element

_IDENT = {"family": "inet", "name": "rulec-filter"}
_AT = {"family": "inet", "table": "rulec-filter"}


def _payload(protocol: str, field: str) -> Json:
    return {"payload": {"protocol": protocol, "field": field}}


def _prefix(addr: str, length: int) -> Json:
    return {"prefix": {"addr": addr, "len": length}}


TRIO = {"concat": [_payload("ip", "saddr"), _payload("ip", "daddr"), _payload("tcp", "dport")]}


def trio_script() -> Script:
    named = {**_AT, "name": "trio", "type": ["ipv4_addr", "ipv4_addr", "inet_service"],
             "flags": ["interval"], "elem": [
                 set_element({"concat": ["198.18.1.2", "198.18.2.2", 22]}, "t1"),
                 set_element({"concat": [_prefix("198.18.3.0", 24), "198.18.2.3",
                                         {"range": [80, 90]}]}),
             ]}
    anonymous = {"set": [
        set_element({"concat": ["198.18.1.4", "198.18.2.4", 443]}, "t2"),
        set_element({"concat": [_prefix("198.18.4.0", 24), _prefix("198.18.5.0", 24),
                                {"range": [8000, 8099]}]}, "t3"),
    ]}
    vmap = {"vmap": {"key": TRIO, "data": {"set": [
        [set_element({"concat": ["198.18.1.6", "198.18.2.6", 25]}, "t4"), {"drop": None}],
        [set_element({"concat": ["198.18.1.7", "198.18.2.7", 25]}), {"jump": {"target": "web"}}],
    ]}}}
    rules = tuple({**_AT, "chain": "FORWARD", "expr": expr} for expr in (
        [{"match": {"op": "==", "left": TRIO, "right": "@trio"}}, {"accept": None}],
        [{"match": {"op": "==", "left": TRIO, "right": anonymous}}, {"accept": None}],
        [vmap],
    ))
    forward = {**_AT, "name": "FORWARD", "type": "filter", "hook": "forward", "prio": 0,
               "policy": "drop"}
    chains = (ChainTree(chain=forward, rules=rules),
              ChainTree(chain={**_AT, "name": "web"}, rules=()))
    return Script(owned=(_IDENT,), tables=(TableTree(table=_IDENT, sets=(named,),
                                                     chains=chains),))


TRIO_TEXT = """table inet rulec-filter {
\tset trio {
\t\ttype ipv4_addr . ipv4_addr . inet_service
\t\tflags interval
\t\telements = { 198.18.1.2 . 198.18.2.2 . 22 comment "t1", 198.18.3.0/24 . 198.18.2.3 . 80-90 }
\t}
\tchain FORWARD {
\t\ttype filter hook forward priority 0; policy drop;
\t\tip saddr . ip daddr . tcp dport @trio accept
\t\tip saddr . ip daddr . tcp dport { 198.18.1.4 . 198.18.2.4 . 443 comment "t2", \
198.18.4.0/24 . 198.18.5.0/24 . 8000-8099 comment "t3" } accept
\t\tip saddr . ip daddr . tcp dport vmap { 198.18.1.6 . 198.18.2.6 . 25 comment "t4" : drop, \
198.18.1.7 . 198.18.2.7 . 25 : jump web }
\t}
\tchain web {
\t}
}
"""
