"""Ask the real kernel: commit an artifact in a throwaway network namespace (dry runs such as
`iptables-restore --test` and `nft -c` miss what the kernel refuses at commit time).

nft goes through libnftables' bindings when loadable, else `nft -f -`. Bindings: `import nftables`
if it has `set_dry_run` and `cmd_from_file` (Debian's python3-nftables; PyPI's pip-nftables 1.0.2
has neither), else Debian's copy loaded by file path, keeping /usr/lib/python3/dist-packages off
sys.path. libnftables acts on the calling thread's netns: it runs in a thread that entered ours.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import os
import shutil
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import Protocol, cast

from rulec.api import emit
from rulec.backends.base import Artifact
from rulec.ir.nodes import Ruleset
from rulec.kernel.netns import TIMEOUT, CommandError, Namespace, namespace

IPTABLES_VARIANTS = ("nft", "legacy")
NFT_VARIANTS = ("libnftables", "cli")
DEBIAN_DIST_PACKAGES = "/usr/lib/python3/dist-packages"
XTABLES_WAIT = "10"  # seconds; legacy restores serialise on /run/xtables.lock across namespaces
# Flags of the artifact's own load command that change what a restore does.
_RESTORE_FLAGS = frozenset({"-n", "--noflush", "-c", "--counters"})


class KernelUnavailable(RuntimeError):
    """This machine cannot run the check (not root, no namespaces, a tool missing)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class KernelVerdict:
    """What the kernel said about one artifact; `message` is the loader's own output."""

    ok: bool
    target: str
    loader: str  # e.g. "iptables-legacy-restore", "libnftables", "nft -f -"
    message: str = ""

    def summary(self) -> str:
        """`ok: target (loader)`, or `rejected: ...` followed by the loader's message, indented."""
        head = f"{'ok' if self.ok else 'rejected'}: {self.target} ({self.loader})"
        if self.ok or not self.message:
            return head
        return head + "\n" + textwrap.indent(self.message, "  ")


class _Nftables(Protocol):
    def cmd_from_file(self, filename: str) -> tuple[int, str, str]: ...
    def set_json_output(self, val: bool) -> bool: ...


@functools.cache
def nftables_module() -> ModuleType | None:
    """The libnftables Python bindings chosen as the module docstring says, or None."""
    try:
        ctypes.CDLL("libnftables.so.1")  # what the bindings load; without it they are useless
    except OSError:
        return None
    try:
        import nftables as found  # type: ignore[import-not-found, unused-ignore]

        if all(hasattr(found.Nftables, m) for m in ("set_dry_run", "cmd_from_file")):
            return cast(ModuleType, found)
    except ImportError:
        pass
    init = os.path.join(DEBIAN_DIST_PACKAGES, "nftables", "__init__.py")
    if not os.path.exists(init):
        return None
    # A private module name keeps a later plain `import nftables` unaffected.
    spec = importlib.util.spec_from_file_location(
        "_rulec_nftables", init, submodule_search_locations=[os.path.dirname(init)])
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except ImportError:
        del sys.modules[spec.name]
        return None
    return module


def _loaders(target: str, variant: str | None) -> tuple[str, ...]:
    """The loaders a check runs, in order: restore commands or "libnftables" / "nft"."""
    if target in ("iptables", "ip6tables"):
        if variant not in (None, *IPTABLES_VARIANTS):
            raise ValueError(f"variant {variant!r}: iptables loads with 'nft' or 'legacy'")
        return tuple(f"{target}-{v}-restore" for v in ((variant,) if variant else
                                                        IPTABLES_VARIANTS))
    if target in ("nft", "nft-json"):
        if variant not in (None, *NFT_VARIANTS):
            raise ValueError(f"variant {variant!r}: nft loads with 'libnftables' or 'cli'")
        if variant == "cli" or (variant is None and nftables_module() is None):
            return ("nft",)
        return ("libnftables",)
    raise ValueError(f"unknown target {target!r}")


@functools.cache
def _namespaces_work() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "`ip` (iproute2) is not on PATH"
    try:
        with namespace("probe"):
            pass
    except (CommandError, OSError) as exc:
        return f"cannot create a network namespace: {exc}"
    return None


def available(target: str | None = None, variant: str | None = None) -> str | None:
    """Why the kernel layer cannot run here (for `target`'s loaders if given), or None."""
    reason = _namespaces_work()
    if reason is not None or target is None:
        return reason
    for loader in _loaders(target, variant):
        if loader == "libnftables":
            if nftables_module() is None:
                return "the libnftables Python bindings cannot be loaded"
        elif shutil.which(loader) is None:
            return f"`{loader}` is not on PATH"
    return None


def validate(ruleset: Ruleset, target: str, *, variant: str | None = None) -> KernelVerdict:
    """Emit `ruleset` for `target` and load it into a fresh namespace (RulecError if it cannot
    be emitted; KernelUnavailable if this machine cannot check). variant None: every loader."""
    return validate_artifact(emit(ruleset, target), variant=variant)


def validate_artifact(artifact: Artifact, *, variant: str | None = None) -> KernelVerdict:
    """Load an already emitted artifact into a fresh namespace that is deleted afterwards."""
    reason = available(artifact.target, variant)
    if reason is None and artifact.ipsets is not None and shutil.which("ipset") is None:
        reason = "`ipset` is not on PATH"
    if reason is not None:
        raise KernelUnavailable(reason)
    with namespace("check") as ns:
        return load(artifact, ns, variant)


def load(artifact: Artifact, ns: Namespace, variant: str | None = None) -> KernelVerdict:
    """Load into `ns` and keep it there; with several loaders, stop at the first failure.

    iptables-nft and iptables-legacy keep separate tables in the kernel, so both variants can
    load into one namespace without seeing each other.
    """
    verdicts: list[KernelVerdict] = []
    if artifact.ipsets is not None:  # the rules refer to the sets: load them first
        verdicts.append(_load_ipsets(artifact, ns))
        if not verdicts[-1].ok:
            return verdicts[-1]
    for loader in _loaders(artifact.target, variant):
        verdicts.append(_load_one(loader, artifact, ns))
        if not verdicts[-1].ok:
            return verdicts[-1]
    if len(verdicts) == 1:
        return verdicts[0]
    return KernelVerdict(ok=True, target=artifact.target,
                         loader=", ".join(v.loader for v in verdicts),
                         message="\n".join(v.message for v in verdicts if v.message))


def _load_ipsets(artifact: Artifact, ns: Namespace) -> KernelVerdict:
    argv = ["ipset", "restore", "-exist"]
    assert artifact.ipsets is not None
    return _run_loader(argv, artifact.ipsets, " ".join(argv), artifact, ns)


def _load_one(loader: str, artifact: Artifact, ns: Namespace) -> KernelVerdict:
    json_input = artifact.target == "nft-json"
    if loader == "libnftables":
        return _load_libnftables(artifact, ns)
    if loader == "nft":
        argv = ["nft", *(["-j"] if json_input else []), "-f", "-"]
    else:
        extra = [a for a in artifact.load_command[1:] if a in _RESTORE_FLAGS]
        argv = [loader, "-w", XTABLES_WAIT, *extra]
    label = loader if loader != "nft" else " ".join(argv)
    return _run_loader(argv, artifact.text, label, artifact, ns)


def _run_loader(argv: list[str], text: str, label: str, artifact: Artifact,
                ns: Namespace) -> KernelVerdict:
    """Feed `text` to `argv` inside `ns`; the verdict carries its output and, on failure,
    what the kernel logged meanwhile."""
    with _kernel_log() as kernel_lines:
        try:
            done = ns.run(argv, input=text, check=False, timeout=TIMEOUT * 3)
        except CommandError as exc:
            return KernelVerdict(ok=False, target=artifact.target, loader=" ".join(argv),
                                 message=str(exc))
        message = "\n".join(s.strip() for s in (done.stdout, done.stderr) if s.strip())
        logged = kernel_lines() if done.returncode != 0 else []
    if logged:
        message += "\nkernel log (shared by all namespaces): " + "; ".join(logged)
    return KernelVerdict(ok=done.returncode == 0, target=artifact.target, loader=label,
                         message=message)


def _load_libnftables(artifact: Artifact, ns: Namespace) -> KernelVerdict:
    module = nftables_module()
    assert module is not None  # _loaders chose libnftables only if it loads
    name = "ruleset.json" if artifact.target == "nft-json" else "ruleset.nft"

    # From a file, not a buffer: libnftables 1.0.6 quotes line 1 of a buffer under every error.
    with tempfile.TemporaryDirectory(prefix="rulec-") as tmp:
        path = os.path.join(tmp, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(artifact.text)

        def apply() -> tuple[int, str, str]:
            nft = cast(_Nftables, module.Nftables())
            # With JSON output on, libnftables also parses the input as JSON.
            nft.set_json_output(artifact.target == "nft-json")
            return nft.cmd_from_file(path)

        try:
            rc, out, err = ns.call(apply, timeout=TIMEOUT * 3)
        except (OSError, TimeoutError) as exc:
            return KernelVerdict(ok=False, target=artifact.target, loader="libnftables",
                                 message=str(exc))
    message = "\n".join(s.strip() for s in (out, err) if s.strip()).replace(path, name)
    return KernelVerdict(ok=rc == 0, target=artifact.target, loader="libnftables",
                         message=message)


# Legacy iptables reports a rejected target only as "line N failed"; the reason ("DNAT target:
# only valid in nat table") goes to the kernel log, which all namespaces share, so only netfilter
# lines are kept and they are labelled as possibly coming from elsewhere.
_NETFILTER_LOG = ("x_tables", "ip_tables", "ip6_tables", "nf_tables", "xt_", "nft_")


@contextmanager
def _kernel_log() -> Iterator[Callable[[], list[str]]]:
    """Yields a function returning the netfilter lines logged since entry (best effort)."""
    try:
        fd: int | None = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        fd = None
    if fd is not None:
        os.lseek(fd, 0, os.SEEK_END)

    def since() -> list[str]:
        lines: list[str] = []
        while fd is not None:
            try:
                record = os.read(fd, 8192).decode(errors="replace")
            except BlockingIOError:
                break
            except OSError:  # EPIPE once when the ring buffer overwrote records; read on
                continue
            text = record.partition(";")[2].strip()
            if any(key in text for key in _NETFILTER_LOG):
                lines.append(text)
        return lines

    try:
        yield since
    finally:
        if fd is not None:
            os.close(fd)


__all__ = ["KernelUnavailable", "KernelVerdict", "available", "load", "nftables_module",
           "validate", "validate_artifact"]
