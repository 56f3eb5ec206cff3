"""rulec: compile firewall policy into Linux netfilter rules (iptables-restore, nft)."""

from rulec.api import (
    TARGETS,
    CompileResult,
    compile_files,
    compile_ruleset,
    compile_text,
    emit,
    parse_files,
    parse_text,
)
from rulec.diagnostics import Diagnostic, RulecError
from rulec.ir.nodes import Ruleset

__version__ = "0.1.0"
__all__ = ["TARGETS", "CompileResult", "Diagnostic", "RulecError", "Ruleset", "compile_files",
           "compile_ruleset", "compile_text", "emit", "parse_files", "parse_text"]
