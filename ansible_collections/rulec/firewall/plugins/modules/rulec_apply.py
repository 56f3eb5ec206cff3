#!/usr/bin/python
"""Ansible module rulec.firewall.rulec_apply: `rulec.apply.apply` on the managed host. Check
mode is rulec's dry run, --diff shows its semantic diff, `confirm` detaches a watcher that
puts the old rules back unless rulec_confirm comes in time (README.md)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: rulec_apply
short_description: Load a rulec firewall policy into the host's kernel, all or nothing
description:
  - Runs C(rulec.apply.apply) on the managed host, which is what C(rulec apply) runs. It
    compiles the policy with translation validation, shows the semantic diff against what
    the kernel holds, saves the host's rules, and loads the least that makes the kernel hold
    the policy. It then reads the rules back to prove they are there, and puts the saved
    rules back if any step fails.
  - In check mode it is rulec's dry run. Nothing is locked, saved or loaded, and C(changed)
    says whether an apply would change the kernel.
  - With C(--diff) the semantic diff is shown, the packets whose fate changes, rather than
    a textual diff of the rules.
  - With O(confirm), the rules are loaded and a detached watcher on the host puts the old ones
    back after O(confirm) seconds unless M(rulec.firewall.rulec_confirm) runs in time. Run that
    task over a new connection, with a C(reset_connection) meta task first. If the new rules
    cut Ansible off, the confirmation never arrives and the host reverts by itself.
version_added: "0.1.0"
requirements:
  - rulec, importable by the Python Ansible uses on the managed host (C(pip install rulec))
  - root on the managed host (C(become=true)), and the netfilter tools rulec drives
    (iptables-restore and ip6tables-restore, ipset, or nft)
options:
  policy:
    description:
      - Policy files on the managed host, in order, as C(rulec compile) takes them.
      - With O(inventory), Kubernetes NetworkPolicy YAML or JSON files instead.
    type: list
    elements: path
    default: []
    aliases: [files, src]
  inventory:
    description:
      - A cluster inventory (namespaces and pods) on the managed host. The NetworkPolicy files
        in O(policy) are compiled against it for a node that routes between the pods.
    type: path
  docker_state:
    description:
      - Docker state JSON files on the managed host (C(docker network inspect),
        C(docker inspect), C(daemon.json)), so that dockerd's chains are emitted too.
    type: list
    elements: path
    default: []
  docker_layout:
    description: dockerd's rule layout when its version is not known.
    type: str
    choices: [current, classic]
  target:
    description:
      - V(auto) loads nft when the kernel holds native nftables tables, and otherwise
        iptables and ip6tables.
    type: str
    choices: [auto, iptables, nft]
    default: auto
  noflush:
    description:
      - Coexist mode. Only the chains the policy declares are compared, loaded and put back,
        so the chains of dockerd, kube-proxy or fail2ban are left alone.
    type: bool
    default: false
  ipset:
    description: With iptables, test address sets with ipsets.
    type: bool
    default: false
  confirm:
    description:
      - Seconds to wait for M(rulec.firewall.rulec_confirm) after loading. Without a
        confirmation in that time, a detached watcher on the host puts the old rules back.
      - V(0) turns this off, and the apply is complete when the task returns.
    type: float
    default: 0
  state_dir:
    description: rulec's lock, journal and saved states on the managed host.
    type: path
    default: /var/lib/rulec
  wait:
    description: Seconds to wait for another apply's lock before failing.
    type: float
    default: 10
  diff_format:
    description: How the semantic diff is shown with C(--diff).
    type: str
    choices: [text, markdown, json]
    default: text
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: posix
notes:
  - The module acts on the network namespace it runs in, which is the host's own unless the
    Python Ansible runs there was started in another one.
  - The failure's C(rc) is the exit code C(rulec apply) gives for the same failure
    (1 policy errors, 2 usage or lock, 3 internal error, 4 the load failed and the saved state
    is back).
seealso:
  - module: rulec.firewall.rulec_confirm
author:
  - rulec contributors
"""

EXAMPLES = r"""
- name: What would change (ansible-playbook --check --diff)
  rulec.firewall.rulec_apply:
    policy: [/etc/rulec/host.rules]

- name: Load the policy, reverted after 60 s unless confirmed
  rulec.firewall.rulec_apply:
    policy: [/etc/rulec/host.rules]
    confirm: 60
  register: firewall

- name: Reconnect, through the new rules
  ansible.builtin.meta: reset_connection

- name: Keep the new rules (this task cannot run if they locked Ansible out)
  rulec.firewall.rulec_confirm:
    apply_id: "{{ firewall.apply_id }}"
  when: firewall.apply_id is not none

- name: Beside dockerd, only the chains the policy declares
  rulec.firewall.rulec_apply:
    policy: [/etc/rulec/docker-host.rules]
    noflush: true
"""

RETURN = r"""
target:
  description: The target rulec loaded, or would load (the choice V(auto) made).
  returned: success
  type: str
  sample: iptables
change:
  description:
    - What was loaded, or would be loaded in check mode.
    - V(none) means the kernel already held the policy, V(chains) the chains that differ
      (iptables), and V(full) the owned tables in one transaction (nft).
  returned: success
  type: str
  sample: chains
equivalent:
  description: Whether the live rules treat every packet as the policy does.
  returned: success
  type: bool
applied:
  description: The kernel holds the policy now (false in check mode).
  returned: success
  type: bool
apply_id:
  description:
    - With O(confirm), the id of the apply awaiting confirmation, for
      M(rulec.firewall.rulec_confirm). Null when nothing was loaded or nothing awaits.
  returned: success
  type: str
  sample: 3f2a9c0d4b6e4f1a8c7d5e3b2a1f0e9d
sent:
  description: The argv of every command that changed the kernel, in order (not their input).
  returned: success
  type: list
  elements: list
  sample: [["iptables-restore", "-w", "10", "--counters", "--noflush"]]
semantic_diff:
  description:
    - The diff from the live rules to the policy, as rulec's JSON document (docs/diff.md).
  returned: success
  type: dict
steps:
  description: rulec's progress lines, one for each step as it started.
  returned: always
  type: list
  elements: str
restored:
  description: After a failed load, whether the saved state had to be put back.
  returned: failure
  type: bool
"""

import os
import traceback
from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.rulec.firewall.plugins.module_utils.common import require_rulec

ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "policy": {"type": "list", "elements": "path", "default": [], "aliases": ["files", "src"]},
    "inventory": {"type": "path"},
    "docker_state": {"type": "list", "elements": "path", "default": []},
    "docker_layout": {"type": "str", "choices": ["current", "classic"]},
    "target": {"type": "str", "choices": ["auto", "iptables", "nft"], "default": "auto"},
    "noflush": {"type": "bool", "default": False},
    "ipset": {"type": "bool", "default": False},
    "confirm": {"type": "float", "default": 0},
    "state_dir": {"type": "path", "default": "/var/lib/rulec"},
    "wait": {"type": "float", "default": 10},
    "diff_format": {"type": "str", "choices": ["text", "markdown", "json"], "default": "text"},
}


def main() -> None:
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        required_one_of=[("policy", "docker_state")],
        mutually_exclusive=[("inventory", "docker_state"), ("inventory", "docker_layout")],
        supports_check_mode=True,
    )
    require_rulec(module)
    run(module)


def run(module: AnsibleModule) -> None:
    from rulec import apply as applying
    from rulec.analysis import render
    from rulec.cli import EXIT_BUG, EXIT_NOT_APPLIED, EXIT_POLICY, EXIT_USAGE
    from rulec.diagnostics import RulecError
    from rulec.validation import ValidationError

    p = module.params
    steps: list[str] = []
    named = [*p["policy"], *([p["inventory"]] if p["inventory"] else []), *p["docker_state"]]
    missing = [name for name in named if not os.path.isfile(name)]
    if missing:
        module.fail_json(msg=f"no such file on the host: {', '.join(missing)}", rc=EXIT_USAGE,
                         steps=steps)
    if p["confirm"] < 0:
        module.fail_json(msg="confirm takes a number of seconds >= 0", rc=EXIT_USAGE,
                         steps=steps)
    policy = applying.Policy(files=tuple(p["policy"]), inventory=p["inventory"],
                             docker_state=tuple(p["docker_state"]),
                             docker_layout=p["docker_layout"])
    confirm = p["confirm"] or None
    try:
        result = applying.apply(policy, target=p["target"], noflush=p["noflush"],
                                ipset=p["ipset"], dry_run=module.check_mode, confirm=confirm,
                                detach=confirm is not None, state_dir=p["state_dir"],
                                wait=p["wait"], report=steps.append)
    except RulecError as exc:
        count = sum(1 for d in exc.diagnostics if d.severity.value == "error")
        module.fail_json(msg=f"{exc.render()}\nrulec: {count} error{'s' if count != 1 else ''}"
                         "; nothing was loaded", rc=EXIT_POLICY, steps=steps)
    except applying.StateError as exc:
        module.fail_json(msg=str(exc), rc=EXIT_USAGE, steps=steps)
    except applying.ApplyError as exc:
        shown = f"\n{render.text(exc.diff)}" if exc.diff is not None else ""
        # As the CLI: a dry run that could not read the kernel is a usage error, not a load.
        rc = EXIT_NOT_APPLIED if exc.restored or not module.check_mode else EXIT_USAGE
        module.fail_json(msg=f"{exc}{shown}", rc=rc, restored=exc.restored, steps=steps)
    except ValidationError as exc:
        module.fail_json(msg=f"internal error in rulec: {exc}; nothing was loaded. What the "
                         f"policy does (old) and what the output does (new):\n"
                         f"{render.text(exc.diff)}", rc=EXIT_BUG, steps=steps)
    except Exception as exc:  # a bug in rulec, never the user's input
        module.fail_json(msg=f"internal error in rulec: {exc!r}; please report it",
                         exception=traceback.format_exc(), rc=EXIT_BUG, steps=steps)
    for warning in result.warnings:
        module.warn(warning)
    # A rewritten but equivalent policy (a new comment) is still a change to the kernel.
    changed = result.change != "none" or not result.diff.equivalent
    out: dict[str, Any] = {
        "changed": changed,
        "target": result.target,
        "change": result.change,
        "equivalent": result.diff.equivalent,
        "applied": result.applied,
        "apply_id": result.awaiting,
        "sent": [list(s.argv) for s in result.sent],
        "semantic_diff": render.document(result.diff),
        "steps": steps,
    }
    if module._diff:
        printer = {"text": render.text, "markdown": render.markdown,
                   "json": render.as_json}[p["diff_format"]]
        out["diff"] = {"prepared": printer(result.diff)}
    module.exit_json(**out)


if __name__ == "__main__":
    main()
