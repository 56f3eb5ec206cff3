"""What the rulec modules share: importing rulec on the managed host, clearly failing when the
Python Ansible runs there cannot, and the exit codes of the `rulec` command they report as rc."""

from __future__ import annotations

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

INSTALL = ("Install rulec into the Python Ansible uses on the host (`pip install rulec`, run "
           "by that interpreter), or point ansible_python_interpreter at a Python that has it.")
# The `rulec apply` exit codes (rulec.cli, docs/apply.md); rulec.cli is not importable when
# rulec is missing, and that failure must have a code too.
EXIT_USAGE = 2


def require_rulec(module: AnsibleModule) -> None:
    """fail_json, saying how to fix it, unless `import rulec.apply` works on this host."""
    try:
        import rulec.apply  # noqa: F401
    except ImportError as exc:
        module.fail_json(
            msg=f"{missing_required_lib('rulec', reason='to compile and load the policy')}. "
            f"{INSTALL} ({exc})", exception=traceback.format_exc(), rc=EXIT_USAGE)

