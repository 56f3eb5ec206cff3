"""The `nft-json` backend: the same transaction as `nft`, in libnftables JSON for `nft -j -f`.

The tree of rulec.backends.nft.tree already is libnftables JSON; this only lays its tables
out as a flat list of commands.
"""

from __future__ import annotations

import json

from rulec.backends.base import Artifact, Backend, EmitOptions
from rulec.backends.nft.tree import Json, Script, to_tree
from rulec.backends.nft.vocabulary import JSON_CONSTANTS, LIMITS_JSON
from rulec.ir.nodes import Ruleset

__all__ = ["JSON_CONSTANTS", "LIMITS_JSON", "NftJsonBackend", "print_script"]


class NftJsonBackend(Backend):
    name = "nft-json"
    limits = LIMITS_JSON

    def emit(self, ruleset: Ruleset, options: EmitOptions) -> Artifact:
        return Artifact(target=self.name, text=print_script(to_tree(ruleset, self.limits)),
                        load_command=("nft", "-j", "-f", "-"))


def print_script(script: Script) -> str:
    """The JSON document: {"nftables": [commands]}."""
    commands: list[Json] = [{"metainfo": {"json_schema_version": 1}}]
    # Adding first makes the delete valid when the table does not exist yet.
    for owned in script.owned:
        commands += [{"add": {"table": owned}}, {"delete": {"table": owned}}]
    for table in script.tables:
        commands.append({"add": {"table": table.table}})
        commands.extend({"add": {"set": declaration}} for declaration in table.sets)
        # Every chain before any rule: a jump needs its target to exist.
        commands.extend({"add": {"chain": chain.chain}} for chain in table.chains)
        for chain in table.chains:
            commands.extend({"add": {"rule": rule}} for rule in chain.rules)
    return json.dumps({"nftables": commands}, indent=2) + "\n"
