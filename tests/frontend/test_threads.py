"""Policies parse in several threads at once: the shared Lark parser calls back into the
lowering of the file its own thread is parsing."""

from __future__ import annotations

import threading

from rulec.api import parse_text
from rulec.ir.values import PortSet


def test_threads_parse_their_own_policies() -> None:
    wrong: list[int] = []

    def work(port: int) -> None:
        text = f"table ip filter {{ chain INPUT {{ accept tcp dport {port} }} }}\n"
        for _ in range(100):
            rule = parse_text(text).tables[0].chains[0].rules[0]
            if rule.match.dport != PortSet.of(port):
                wrong.append(port)

    threads = [threading.Thread(target=work, args=(port,)) for port in range(1, 7)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert wrong == []
