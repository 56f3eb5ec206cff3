#!/usr/bin/python
"""Ansible module rulec.firewall.rulec_confirm: keep the rules of an apply awaiting its
confirmation (`rulec confirm`), and report only what the host's watcher then did."""

from __future__ import annotations

DOCUMENTATION = r"""
module: rulec_confirm
short_description: Keep the rules of a rulec apply that awaits confirmation
description:
  - Confirms an apply that M(rulec.firewall.rulec_apply) made with
    O(rulec.firewall.rulec_apply#module:confirm), as C(rulec confirm) does, and waits until
    the watcher on the host has kept the rules.
  - Run it over a new connection, with a C(reset_connection) meta task before it. A task that
    can reach the host through the new rules proves they let Ansible in. If they do not, the
    task cannot run and the watcher puts the old rules back at the deadline.
  - A confirmation is written under rulec's lock and only before the deadline, so the task
    succeeds exactly when the rules are kept. When the deadline has passed, it fails with
    C(rc=5) once the watcher has put the old rules back.
  - It fails with C(rc=2) when the apply named no longer awaits confirmation. By then it was
    confirmed already, reverted at its deadline, or rolled back, and the host does not
    record which.
version_added: "0.1.0"
requirements:
  - rulec, importable by the Python Ansible uses on the managed host (C(pip install rulec))
  - root on the managed host (C(become=true))
options:
  apply_id:
    description:
      - The apply to confirm, the RV(rulec.firewall.rulec_apply#module:apply_id) of its task.
        The task fails if that apply no longer awaits confirmation.
      - Without it, whichever apply awaits confirmation is confirmed, and the task fails if
        none does.
    type: str
  state_dir:
    description: rulec's state directory on the host, the one the apply used.
    type: path
    default: /var/lib/rulec
  wait:
    description: Seconds to wait for rulec's lock, and then for the watcher to finish.
    type: float
    default: 30
attributes:
  check_mode:
    support: full
    details: Reports whether an apply awaits confirmation, without confirming it.
  diff_mode:
    support: none
  platform:
    platforms: posix
seealso:
  - module: rulec.firewall.rulec_apply
author:
  - rulec contributors
"""

EXAMPLES = r"""
- rulec.firewall.rulec_apply:
    policy: [/etc/rulec/host.rules]
    confirm: 60
  register: firewall

- ansible.builtin.meta: reset_connection

- rulec.firewall.rulec_confirm:
    apply_id: "{{ firewall.apply_id }}"
  when: firewall.apply_id is not none
"""

RETURN = r"""
apply_id:
  description: The apply that was confirmed (or would be, in check mode).
  returned: success
  type: str
kept:
  description: The watcher has kept the rules, and the apply is complete.
  returned: success
  type: bool
"""

import os
import time
from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.rulec.firewall.plugins.module_utils.common import require_rulec

AWAITING = "awaiting-confirmation"


ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "apply_id": {"type": "str"},
    "state_dir": {"type": "path", "default": "/var/lib/rulec"},
    "wait": {"type": "float", "default": 30},
}


def main() -> None:
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    require_rulec(module)
    run(module)


def run(module: AnsibleModule) -> None:
    from rulec.apply.state import StateDir, StateError
    from rulec.cli import EXIT_REVERTED, EXIT_USAGE

    wanted: str | None = module.params["apply_id"] or None
    wait: float = module.params["wait"]
    state = StateDir(module.params["state_dir"])
    try:
        journal = _awaiting(state, wanted)
        if module.check_mode:
            module.exit_json(changed=True, apply_id=journal["id"], kept=False)
        if "watcher" not in journal:
            # A blocking `rulec apply --confirm` holds the lock while it waits: it reads the
            # confirmation itself.
            module.exit_json(changed=True, apply_id=state.confirm(), kept=False)
        with state.locked(wait):
            # The watcher decides under this lock too: a confirmation written here, before
            # the deadline, is one it keeps; after the deadline none is written.
            journal = _awaiting(state, wanted)
            late = time.time() >= float(journal["deadline"])
            if not late:
                state.confirm(settle=None)  # the watcher needs this lock to keep them
        done = _watcher_done(state, journal, wait)
    except StateError as exc:
        module.fail_json(msg=str(exc), rc=EXIT_USAGE)
    if late:
        module.fail_json(msg=f"apply {journal['id']} was not confirmed within its deadline; "
                         + ("the watcher put the saved state back" if done else
                            f"its watcher (pid {journal['watcher']}) puts the saved state "
                            "back"), rc=EXIT_REVERTED, apply_id=journal["id"])
    if not done:
        module.warn(f"confirmed, but the watcher (pid {journal['watcher']}) has not finished "
                    f"in {wait:g} s; the next rulec apply or rollback keeps the rules")
    module.exit_json(changed=True, apply_id=journal["id"], kept=done)


def _awaiting(state: Any, wanted: str | None) -> dict[str, Any]:
    """The journal of the apply awaiting confirmation (the one named, if `wanted`)."""
    from rulec.apply.state import StateError

    journal = state.journal()
    if journal is None or journal.get("step") != AWAITING:
        if wanted is not None:
            # Nothing on the host says which: the journal is gone either way.
            raise StateError(f"apply {wanted} no longer awaits confirmation: it was confirmed "
                             "already, or its watcher put the saved state back at the "
                             "deadline, or it was rolled back")
        raise StateError(f"no rulec apply is waiting for confirmation (state {state.path})")
    if wanted is not None and journal["id"] != wanted:
        raise StateError(f"apply {wanted} no longer awaits confirmation; apply "
                         f"{journal['id']} does")
    return dict(journal)


def _watcher_done(state: Any, journal: dict[str, Any], wait: float) -> bool:
    """Whether the watcher finished (the journal of this apply gone) within `wait` seconds."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        now = state.journal()
        if now is None or now["id"] != journal["id"]:
            return True
        if not _alive(journal.get("watcher")):
            return False
        time.sleep(0.05)
    return False


def _alive(pid: object) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


if __name__ == "__main__":
    main()
