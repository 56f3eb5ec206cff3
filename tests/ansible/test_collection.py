"""The collection as Ansible reads it: each module's documentation parses and names exactly
the options its argument spec takes, and galaxy.yml builds a collection artifact."""

from __future__ import annotations

import ast
import json
import tarfile
from pathlib import Path
from typing import Any

from tests.ansible.playbook import REPO, Ansible

COLLECTION = REPO / "ansible_collections/rulec/firewall"
MODULES = ["rulec_apply", "rulec_confirm"]


def _argument_spec(module: str) -> dict[str, dict[str, Any]]:
    tree = ast.parse((COLLECTION / "plugins/modules" / f"{module}.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "ARGUMENT_SPEC":
            assert node.value is not None
            spec: dict[str, dict[str, Any]] = ast.literal_eval(node.value)
            return spec
    raise AssertionError(f"{module} has no ARGUMENT_SPEC")


def test_the_documentation_describes_every_option_as_the_module_takes_it(
        ansible: Ansible) -> None:
    done = ansible.tool("ansible-doc", "--json", *(f"rulec.firewall.{m}" for m in MODULES))
    assert done.returncode == 0, done.stderr
    docs = json.loads(done.stdout)
    for module in MODULES:
        doc = docs[f"rulec.firewall.{module}"]["doc"]
        spec = _argument_spec(module)
        assert set(doc["options"]) == set(spec), module
        for name, option in spec.items():
            documented = doc["options"][name]
            for key in ("type", "elements", "choices", "aliases", "default"):
                assert documented.get(key) == option.get(key), (module, name, key)
        assert doc["attributes"]["check_mode"]["support"] == "full"


def test_galaxy_yml_builds_the_collection(ansible: Ansible, tmp_path: Path) -> None:
    done = ansible.tool("ansible-galaxy", "collection", "build", str(COLLECTION),
                        "--output-path", str(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    (artifact,) = tmp_path.glob("rulec-firewall-*.tar.gz")
    with tarfile.open(artifact) as tar:
        names = set(tar.getnames())
    assert {f"plugins/modules/{m}.py" for m in MODULES} <= names
    assert {"MANIFEST.json", "README.md", "plugins/module_utils/common.py"} <= names
