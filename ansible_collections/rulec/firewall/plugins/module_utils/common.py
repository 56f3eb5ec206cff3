"""What the rulec modules share: importing rulec on the managed host, and failing clearly, with
how to fix it, when the Python Ansible runs there cannot."""

from __future__ import annotations

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

INSTALL = ("Install rulec into the Python Ansible uses on the host (`pip install rulec`, run "
           "by that interpreter), or point ansible_python_interpreter at a Python that has it.")
# rulec.cli's EXIT_USAGE, which cannot be imported when rulec is missing.
EXIT_USAGE = 2


def require_rulec(module: AnsibleModule) -> None:
    """fail_json, saying how to fix it, unless `import rulec.apply` works on this host."""
    try:
        import rulec.apply  # noqa: F401
    except ImportError as exc:
        module.fail_json(
            msg=f"{missing_required_lib('rulec', reason='to compile and load the policy')}. "
            f"{INSTALL} ({exc})", exception=traceback.format_exc(), rc=EXIT_USAGE)

