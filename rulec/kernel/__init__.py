"""Talking to a live kernel inside throwaway network namespaces: validate, load, read back."""

from rulec.kernel.netns import CommandError, Namespace, namespace, veth_pair
from rulec.kernel.readback import (
    iptables_rules,
    iptables_save,
    legacy_table,
    nft_list,
    rule_lines,
)
from rulec.kernel.validate import (
    KernelUnavailable,
    KernelVerdict,
    available,
    load,
    validate,
    validate_artifact,
)

__all__ = ["CommandError", "KernelUnavailable", "KernelVerdict", "Namespace", "available",
           "iptables_rules", "iptables_save", "legacy_table", "load", "namespace", "nft_list",
           "rule_lines", "validate", "validate_artifact", "veth_pair"]
