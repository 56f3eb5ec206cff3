"""Run ansible-playbook against "hosts" that are network namespaces. Each host's
ansible_python_interpreter is a wrapper that execs this test run's Python inside its namespace
(`ip netns exec`), so with `-c local` every module, and the watcher it leaves behind, runs in
that namespace. Ansible's home, temp directories and configuration are all under a temp dir,
and the collection comes from this repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rulec.kernel import Namespace

REPO = Path(__file__).resolve().parents[2]  # holds ansible_collections/rulec/firewall
# ansible-playbook of the test environment first: the `ansible` extra installs it beside python.
ANSIBLE_PLAYBOOK = shutil.which(
    "ansible-playbook", path=os.pathsep.join([str(Path(sys.executable).parent),
                                              os.environ.get("PATH", "")]))
BIN = Path(ANSIBLE_PLAYBOOK).parent if ANSIBLE_PLAYBOOK else None  # ansible-doc, ansible-galaxy
UNAVAILABLE = None if ANSIBLE_PLAYBOOK else (
    "ansible-playbook is not installed: pip install -e '.[ansible]' (scripts/test.sh does)")
TIMEOUT = 180


PLUGINS = Path(__file__).with_name("callback_plugins")


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str
    results: list[dict[str, dict[str, Any]]]  # per task, in order: each host's result


class Ansible:
    """ansible-playbook, configured to write nothing outside `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        for name in ("home", "local-tmp", "remote-tmp"):
            (root / name).mkdir(parents=True, exist_ok=True)
        config = root / "ansible.cfg"
        config.write_text("[defaults]\n")  # ignore /etc/ansible/ansible.cfg and ~/.ansible.cfg
        self.env = {
            **os.environ,
            "HOME": str(root / "home"),
            "ANSIBLE_CONFIG": str(config),
            "ANSIBLE_COLLECTIONS_PATH": str(REPO),
            "ANSIBLE_COLLECTIONS_SCAN_SYS_PATH": "false",
            "ANSIBLE_LOCAL_TEMP": str(root / "local-tmp"),
            "ANSIBLE_REMOTE_TEMP": str(root / "remote-tmp"),
            "ANSIBLE_PIPELINING": "true",  # fewer shells per task: the playbooks run faster
            "ANSIBLE_NOCOLOR": "true",
            "ANSIBLE_RETRY_FILES_ENABLED": "false",
            "ANSIBLE_CALLBACK_PLUGINS": str(PLUGINS),
            "ANSIBLE_CALLBACKS_ENABLED": "rulec_results",
        }
        self._runs = 0

    def tool(self, name: str, *args: str) -> subprocess.CompletedProcess[str]:
        """ansible-doc, ansible-galaxy, ... with this configuration."""
        assert BIN is not None
        return subprocess.run([str(BIN / name), *args], env=self.env, cwd=self.root,
                              capture_output=True, text=True, timeout=TIMEOUT, check=False)

    def interpreter(self, ns: Namespace, *flags: str) -> str:
        """A Python for Ansible that runs inside `ns` (with extra interpreter `flags`)."""
        tag = "-".join(f.strip("-") for f in flags)
        wrapper = self.root / f"python-{ns.name}{'-' + tag if tag else ''}"
        argv = " ".join(["ip", "netns", "exec", ns.name, sys.executable, *flags])
        wrapper.write_text(f'#!/bin/sh\nexec {argv} "$@"\n')
        wrapper.chmod(0o755)
        return str(wrapper)

    def play(self, hosts: Mapping[str, Namespace], tasks: Sequence[Mapping[str, Any]],
             *options: str, hostvars: Mapping[str, Mapping[str, Any]] | None = None) -> Run:
        """One play of `tasks` on every host (in parallel, as a fleet's would run)."""
        self._runs += 1
        inventory = self.root / f"hosts-{self._runs}.json"
        inventory.write_text(json.dumps({"all": {"hosts": {
            name: {"ansible_connection": "local",
                   "ansible_python_interpreter": self.interpreter(ns),
                   **(hostvars or {}).get(name, {})}
            for name, ns in hosts.items()}}}))
        playbook = self.root / f"play-{self._runs}.json"  # JSON is YAML
        playbook.write_text(json.dumps([{"hosts": "all", "gather_facts": False,
                                         "tasks": list(tasks)}], indent=1))
        results = self.root / f"results-{self._runs}.json"
        assert ANSIBLE_PLAYBOOK is not None
        done = subprocess.run(
            [ANSIBLE_PLAYBOOK, "-i", str(inventory), str(playbook), *options],
            env={**self.env, "RULEC_TEST_RESULTS": str(results)}, cwd=self.root,
            capture_output=True, text=True, timeout=TIMEOUT, check=False)
        found = json.loads(results.read_text()) if results.exists() else []
        return Run(done.returncode, done.stdout, done.stderr, found)
