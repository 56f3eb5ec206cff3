"""A callback for the tests: every task's result per host, in order, written as JSON to
$RULEC_TEST_RESULTS when the playbook ends (beside the default output, which stays readable
in assertion messages). Ansible loads it from ANSIBLE_CALLBACK_PLUGINS; pytest does not."""

from __future__ import annotations

import json
import os
from typing import Any

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):  # type: ignore[misc]
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "notification"
    CALLBACK_NAME = "rulec_results"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tasks: dict[str, dict[str, Any]] = {}  # by task uuid, in the order they start

    def v2_playbook_on_task_start(self, task: Any, is_conditional: bool) -> None:
        self.tasks.setdefault(task._uuid, {})  # a meta task may start once per host

    def _record(self, result: Any, **status: bool) -> None:
        host = getattr(result, "host", None) or result._host  # 2.19 names / older names
        task = getattr(result, "task", None) or result._task
        data = getattr(result, "result", None)
        data = result._result if data is None else data
        self.tasks.setdefault(task._uuid, {})[host.get_name()] = {k: v for k, v in data.items()
                                           if not k.startswith("_ansible")} | status

    def v2_runner_on_ok(self, result: Any) -> None:
        self._record(result)

    def v2_runner_on_failed(self, result: Any, ignore_errors: bool = False) -> None:
        self._record(result, failed=True)  # 2.19 keeps `failed` out of the result

    def v2_runner_on_skipped(self, result: Any) -> None:
        self._record(result)

    def v2_runner_on_unreachable(self, result: Any) -> None:
        self._record(result, unreachable=True)

    def v2_playbook_on_stats(self, stats: Any) -> None:
        with open(os.environ["RULEC_TEST_RESULTS"], "w", encoding="utf-8") as out:
            json.dump(list(self.tasks.values()), out, default=str)
