"""Probe agent, run inside a namespace by probe.py: servers that tell each peer what they saw,
and clients that try many connections at once and print the outcomes as JSON. Stdlib only.
"""

from __future__ import annotations

import json
import os
import random
import selectors
import socket
import struct
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

READ_TIMEOUT = 5.0


def _plain(address: str) -> str:
    # A dual-stack socket shows IPv4 peers as ::ffff:a.b.c.d.
    return address.removeprefix("::ffff:")


def serve(proto: str, ports: list[int]) -> None:
    """Answer every TCP connection / UDP datagram with {"peer", "port", "mss"} and go on.

    `proto` is "tcp", "udp" or "tcp+udp" (both on every port: one process instead of two)."""
    selector = selectors.DefaultSelector()
    for kind_name in proto.split("+"):
        kind = socket.SOCK_STREAM if kind_name == "tcp" else socket.SOCK_DGRAM
        for port in ports:
            sock = socket.socket(socket.AF_INET6, kind)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("::", port))
            if kind == socket.SOCK_STREAM:
                sock.listen(64)
            selector.register(sock, selectors.EVENT_READ, (sock, port))
    # The parent holds our stdin: when it goes away, so do we, even if it could not kill us.
    threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
    print("READY", flush=True)
    while True:
        for key, _ in selector.select():
            sock, port = key.data
            try:
                if sock.type == socket.SOCK_STREAM:
                    conn, peer = sock.accept()
                    with conn:
                        mss = conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)
                        report = {"peer": _plain(peer[0]), "port": port, "mss": mss}
                        conn.sendall(json.dumps(report).encode() + b"\n")
                else:
                    _, peer = sock.recvfrom(2048)
                    report = {"peer": _plain(peer[0]), "port": port, "mss": None}
                    sock.sendto(json.dumps(report).encode(), peer)
            except OSError:  # a client that gave up must not take the server down
                continue

def _checksum(data: bytes) -> int:
    padded = data + b"\0" * (len(data) % 2)
    total = sum(struct.unpack(f"!{len(padded) // 2}H", padded))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ping(dst: str, src: str | None, timeout: float) -> dict[str, Any]:
    """One ICMP / ICMPv6 echo request, and the wait for its reply (the peer's kernel answers).

    A raw socket (we are root; ping sockets are off by default in a namespace) sees every
    reply, so each attempt picks its own identifier and waits for that one."""
    v6 = ":" in dst
    family, proto = (socket.AF_INET6, socket.IPPROTO_ICMPV6) if v6 else (
        socket.AF_INET, socket.IPPROTO_ICMP)
    request, reply = (128, 129) if v6 else (8, 0)
    ident = random.randrange(1 << 16)
    packet = struct.pack("!BBHHH", request, 0, 0, ident, 1) + b"probe"
    if not v6:  # the kernel fills in ICMPv6 checksums, not ICMP ones
        packet = packet[:2] + struct.pack("!H", _checksum(packet)) + packet[4:]
    deadline = time.monotonic() + timeout
    with socket.socket(family, socket.SOCK_RAW, proto) as sock:
        if src:
            sock.bind((src, 0))
        sock.sendto(packet, (dst, 0))
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                data = sock.recv(2048)
            except OSError as exc:
                return {"connected": False, "reply": None, "error": str(exc) or "timeout"}
            if not v6:
                data = data[(data[0] & 0x0F) * 4:]  # raw IPv4 sockets keep the IP header
            if len(data) >= 8 and data[0] == reply and struct.unpack("!H", data[4:6])[0] == ident:
                return {"connected": True, "reply": None, "error": None}
    return {"connected": False, "reply": None, "error": "timeout"}


def attempt(spec: dict[str, Any]) -> dict[str, Any]:
    """One connection (TCP), datagram exchange (UDP) or echo (icmp, port ignored) from
    spec["src"] to spec["dst"]."""
    dst, port, src, timeout = spec["dst"], spec["port"], spec.get("src"), spec["timeout"]
    if spec["proto"] == "icmp":
        return ping(dst, src, timeout)
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    kind = socket.SOCK_STREAM if spec["proto"] == "tcp" else socket.SOCK_DGRAM
    with socket.socket(family, kind) as sock:
        sock.settimeout(timeout)
        if src:
            sock.bind((src, 0))
        try:
            if kind == socket.SOCK_STREAM:
                sock.connect((dst, port))
                sock.settimeout(READ_TIMEOUT)  # once through, a slow server is not a drop
                data = b""
                while not data.endswith(b"\n"):
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            else:
                sock.sendto(b"probe", (dst, port))
                data = sock.recv(4096)
        except OSError as exc:
            connected = kind == socket.SOCK_STREAM and exc.errno is None and _is_connected(sock)
            return {"connected": connected, "reply": None, "error": str(exc) or type(exc).__name__}
        reply = json.loads(data) if data.strip() else None
        return {"connected": True, "reply": reply, "error": None}


def _is_connected(sock: socket.socket) -> bool:
    try:
        sock.getpeername()
    except OSError:
        return False
    return True


def connect(specs: list[dict[str, Any]]) -> None:
    with ThreadPoolExecutor(max_workers=max(1, len(specs))) as pool:
        print(json.dumps(list(pool.map(attempt, specs))), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2], [int(p) for p in sys.argv[3:]])
    else:
        connect(json.loads(sys.argv[2]))
