"""`python -m rulec.apply.watcher STATE_DIR APPLY_ID`: the detached watcher `apply(...,
detach=True)` starts (rulec.apply.watch)."""

from __future__ import annotations

import sys

from rulec.apply import watch

if __name__ == "__main__":
    raise SystemExit(0 if watch(sys.argv[1], sys.argv[2]) else 1)
