"""nft's side of the backends: the one lowering both nft targets print.

vocabulary.py (keywords, limits, names) -> check.py (refusals, with spans) -> tree.py (the IR as
one libnftables-JSON expression tree); nftables.py prints that tree as `nft -f` text,
nftables_json.py as JSON.
"""
