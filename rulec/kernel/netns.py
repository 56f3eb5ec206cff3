"""Throwaway network namespaces: create under a unique `rulec-` name, run commands inside, delete.

Every subprocess gets an argument list and a timeout; `Namespace.call` runs Python code in a
thread that has entered the namespace, for libraries (libnftables) that talk netlink in-process.
"""

from __future__ import annotations

import ctypes
import functools
import itertools
import os
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import TypeVar

T = TypeVar("T")

TIMEOUT = 10.0  # seconds for one command; loading a large ruleset stays far below it
PREFIX = "rulec-"
CLONE_NEWNET = 0x40000000  # os.CLONE_NEWNET arrives with Python 3.12

_serial = itertools.count()


class CommandError(RuntimeError):
    """A command that had to succeed failed; carries its stderr."""

    def __init__(self, argv: Sequence[str], returncode: int | None, stderr: str) -> None:
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stderr = stderr
        status = "timed out" if returncode is None else f"exit {returncode}"
        super().__init__(f"{' '.join(argv)}: {status}: {stderr.strip()}")


def run(
    argv: Sequence[str],
    *,
    input: str | None = None,
    check: bool = True,
    timeout: float = TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing text output; CommandError if `check` and it fails or hangs."""
    try:
        done = subprocess.run(list(argv), input=input, capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise CommandError(argv, None, f"no answer after {timeout:g} s") from exc
    if check and done.returncode != 0:
        raise CommandError(argv, done.returncode, done.stderr or done.stdout)
    return done


def unique_name(tag: str = "ns") -> str:
    """`rulec-<pid>-<tag><n>`: unique per process and call, so parallel runs never collide."""
    return f"{PREFIX}{os.getpid()}-{tag}{next(_serial)}"


class Namespace:
    """A named network namespace (`ip netns add`), with its loopback up; delete() is idempotent."""

    def __init__(self, tag: str = "ns") -> None:
        self.name = unique_name(tag)
        run(["ip", "netns", "add", self.name])
        self._alive = True
        try:
            self.ip("link", "set", "lo", "up")
        except BaseException:
            self.delete()
            raise

    @property
    def path(self) -> str:
        return f"/run/netns/{self.name}"

    def run(
        self,
        argv: Sequence[str],
        input: str | None = None,
        check: bool = True,
        timeout: float = TIMEOUT,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespace (`ip netns exec`)."""
        return run(["ip", "netns", "exec", self.name, *argv], input=input, check=check,
                   timeout=timeout)

    def popen(self, argv: Sequence[str]) -> subprocess.Popen[str]:
        """Start a long-running command inside; `ip netns exec` execs it, so the PID is its own.

        The caller stops it by PID; its stdin is a pipe so that it can notice its parent leaving.
        """
        return subprocess.Popen(["ip", "netns", "exec", self.name, *argv], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def ip(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`ip -n NAME ...`: cheaper than `ip netns exec` (no mount namespace)."""
        return run(["ip", "-n", self.name, *args])

    def sysctl(self, key: str, value: str) -> None:
        """Set a net.* sysctl of this namespace only, e.g. ("net.ipv4.ip_forward", "1").

        Written from a thread inside the namespace: /proc/sys/net shows the writer's namespace,
        and `_enter` raises before any write if entering fails, so the root one is never touched.
        """
        if not key.startswith("net."):
            raise ValueError(f"{key}: only net.* sysctls belong to a network namespace")
        path = "/proc/sys/" + key.replace(".", "/")

        def write() -> None:
            with open(path, "w", encoding="ascii") as f:
                f.write(value)

        self.call(write)

    def add_address(self, dev: str, cidr: str) -> None:
        # IPv6 duplicate address detection would keep the address unusable for ~1 s.
        extra = ("nodad",) if ":" in cidr else ()
        self.ip("address", "add", cidr, "dev", dev, *extra)

    def link_up(self, dev: str, *, mtu: int | None = None) -> None:
        self.ip("link", "set", dev, "up", *(("mtu", str(mtu)) if mtu is not None else ()))

    def add_route(self, dest: str, via: str) -> None:
        self.ip("-6" if ":" in via else "-4", "route", "add", dest, "via", via)

    def call(self, fn: Callable[[], T], timeout: float = TIMEOUT) -> T:
        """Run `fn` in a fresh thread that has entered this namespace; return its result.

        setns(CLONE_NEWNET) changes only the calling thread, so sockets that `fn` opens live in
        the namespace while the rest of the process stays where it was. The thread ends with
        `fn`, so no pooled thread is ever left in the wrong namespace.
        """
        outcome: list[T] = []
        failure: list[BaseException] = []

        def body() -> None:
            try:
                _enter(self.path)
                outcome.append(fn())
            except BaseException as exc:  # handed to the caller's thread below
                failure.append(exc)

        thread = threading.Thread(target=body, name=f"in-{self.name}", daemon=True)
        thread.start()
        thread.join(timeout)
        if thread.is_alive():
            raise TimeoutError(f"no answer from code inside {self.name} after {timeout:g} s")
        if failure:
            raise failure[0]
        return outcome[0]

    def delete(self) -> None:
        if self._alive:
            self._alive = False
            run(["ip", "netns", "delete", self.name], check=False)

    def __enter__(self) -> Namespace:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.delete()

    def __repr__(self) -> str:
        return f"Namespace({self.name!r})"


@contextmanager
def namespace(tag: str = "ns") -> Iterator[Namespace]:
    """A fresh namespace, deleted on exit even when the body fails."""
    ns = Namespace(tag)
    try:
        yield ns
    finally:
        ns.delete()


def veth_pair(a: Namespace, a_dev: str, b: Namespace, b_dev: str) -> None:
    """Connect two namespaces; the pair is born inside them and never appears in the root one."""
    a.ip("link", "add", a_dev, "type", "veth", "peer", "name", b_dev, "netns", b.name)


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _enter(path: str) -> None:
    libc = _libc()
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


__all__ = ["TIMEOUT", "CommandError", "Namespace", "namespace", "run", "unique_name", "veth_pair"]
