"""nft's side of the backends: its vocabulary, the refusals, and the decisions both nft
printers (nftables.py for `nft -f`, nftables_json.py for `nft -j -f`) share."""
