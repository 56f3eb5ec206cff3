"""Backend registry: --target name -> backend class (imported lazily)."""

from __future__ import annotations

import importlib

from rulec.backends.base import Artifact, Backend, EmitOptions

# name -> "module:Class"; the name is what `--target` takes.
BACKENDS: dict[str, str] = {
    "iptables": "rulec.backends.iptables:IptablesBackend",
    "ip6tables": "rulec.backends.iptables:Ip6tablesBackend",
    "nft": "rulec.backends.nftables:NftBackend",
    "nft-json": "rulec.backends.nftables_json:NftJsonBackend",
}


def get_backend(name: str) -> Backend:
    """An instance of the backend registered under `name`; KeyError if there is none."""
    module_name, class_name = BACKENDS[name].split(":")
    cls: type[Backend] = getattr(importlib.import_module(module_name), class_name)
    return cls()


__all__ = ["BACKENDS", "Artifact", "Backend", "EmitOptions", "get_backend"]
