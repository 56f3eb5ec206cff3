"""`-o` and `--ipset` write the way configuration management expects: every file of a run or
none, atomically, through symlinks, keeping mode and owner, never over an input or a device."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from rulec import cli
from tests.cli.conftest import Run

POLICY = """table ip filter {
  chain INPUT policy drop {
    accept tcp dport 22 from { 198.51.100.0/24, 203.0.113.0/24 }
  }
}
"""
BROKEN = "table ip filter { chain INPUT { accept tcp dport 99999 } }\n"


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.rules"
    path.write_text(POLICY, encoding="utf-8")
    return path


def test_writes_a_new_file_as_a_shell_redirection_would(run: Run, policy: Path) -> None:
    old = os.umask(0o022)
    try:
        code, out, _ = run("compile", "policy.rules", "-o", "rules.v4", cwd=policy.parent)
    finally:
        os.umask(old)
    target = policy.parent / "rules.v4"
    assert (code, out) == (cli.EXIT_OK, "")
    assert "COMMIT" in target.read_text(encoding="utf-8")
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert sorted(p.name for p in policy.parent.iterdir()) == ["policy.rules", "rules.v4"]


def test_dash_is_standard_output(run: Run, policy: Path) -> None:
    code, out, _ = run("compile", "policy.rules", "-o", "-", cwd=policy.parent)
    assert code == cli.EXIT_OK and "COMMIT" in out


def test_writes_through_a_symlink(run: Run, policy: Path) -> None:
    real = policy.parent / "real.v4"
    real.write_text("old\n", encoding="utf-8")
    (policy.parent / "link.v4").symlink_to("real.v4")
    code, _, _ = run("compile", "policy.rules", "-o", "link.v4", cwd=policy.parent)
    assert code == cli.EXIT_OK
    assert (policy.parent / "link.v4").is_symlink()
    assert "COMMIT" in real.read_text(encoding="utf-8")


def test_keeps_mode_and_owner_of_the_replaced_file(run: Run, policy: Path) -> None:
    target = policy.parent / "rules.v4"
    target.write_text("old\n", encoding="utf-8")
    target.chmod(0o640)
    owner = (os.getuid(), os.getgid())
    if os.geteuid() == 0:
        owner = (4242, 4343)
        os.chown(target, *owner)
    code, _, _ = run("compile", "policy.rules", "-o", "rules.v4", cwd=policy.parent)
    assert code == cli.EXIT_OK
    info = target.stat()
    assert (stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid) == (0o640, *owner)
    assert "COMMIT" in target.read_text(encoding="utf-8")


@pytest.mark.parametrize("kind", ["device", "fifo", "directory"])
def test_refuses_what_is_not_a_regular_file(run: Run, policy: Path, kind: str) -> None:
    # A private node, never the machine's /dev/null: a regression would replace it.
    target = policy.parent / "node"
    if kind == "device":
        if os.geteuid() != 0:
            pytest.skip("creating a device node needs root")
        os.mknod(target, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # what /dev/null is
    elif kind == "fifo":
        os.mkfifo(target)
    else:
        target.mkdir()
    before = target.lstat()
    code, out, err = run("compile", "policy.rules", "-o", "node", cwd=policy.parent)
    assert (code, out) == (cli.EXIT_USAGE, "")
    assert err.startswith("rulec: error: cannot write node: it is a ")
    after = target.lstat()
    assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino)


def test_a_missing_directory_is_a_usage_error(run: Run, policy: Path) -> None:
    code, _, err = run("compile", "policy.rules", "-o", "no/such/dir/rules.v4",
                       cwd=policy.parent)
    assert code == cli.EXIT_USAGE
    assert "cannot write no/such/dir/rules.v4: directory" in err and "does not exist" in err


def test_never_overwrites_an_input(run: Run, policy: Path) -> None:
    (policy.parent / "main.rules").write_text('include "policy.rules"\n', encoding="utf-8")
    for args in (("policy.rules", "-o", "policy.rules"),
                 ("main.rules", "-o", "policy.rules"),  # an included file
                 ("policy.rules", "--ipset", "policy.rules", "-o", "x")):
        code, _, err = run("compile", *args, cwd=policy.parent)
        assert code == cli.EXIT_USAGE, args
        assert "it is one of the input files" in err
        assert policy.read_text(encoding="utf-8") == POLICY
    assert not (policy.parent / "x").exists()


def test_the_same_file_twice_is_refused(run: Run, policy: Path) -> None:
    code, _, err = run("compile", "policy.rules", "--ipset", "out", "-o", "out",
                       cwd=policy.parent)
    assert code == cli.EXIT_USAGE and "given as two outputs" in err


def test_a_bad_rules_path_writes_no_sets_either(run: Run, policy: Path) -> None:
    code, _, _ = run("compile", "policy.rules", "--ipset", "sets", "-o", "missing/rules.v4",
                     cwd=policy.parent)
    assert code == cli.EXIT_USAGE
    assert sorted(p.name for p in policy.parent.iterdir()) == ["policy.rules"]


def test_a_failed_compile_leaves_every_output_as_it_was(run: Run, tmp_path: Path) -> None:
    (tmp_path / "bad.rules").write_text(BROKEN, encoding="utf-8")
    for name in ("sets", "rules.v4"):
        (tmp_path / name).write_text("old\n", encoding="utf-8")
    code, out, _ = run("compile", "bad.rules", "--ipset", "sets", "-o", "rules.v4",
                       cwd=tmp_path)
    assert (code, out) == (cli.EXIT_POLICY, "")
    for name in ("sets", "rules.v4"):
        assert (tmp_path / name).read_text(encoding="utf-8") == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.rules", "rules.v4", "sets"]


def test_a_failure_while_staging_writes_nothing(run: Run, policy: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The second file cannot be written (disk full): the first, already staged, stays out."""
    calls = []
    real_fsync = os.fsync

    def full_disk(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk)
    code, _, err = run("compile", "policy.rules", "--ipset", "sets", "-o", "rules.v4",
                       cwd=policy.parent)
    assert code == cli.EXIT_USAGE
    assert "cannot write rules.v4: No space left on device; nothing was written" in err
    assert sorted(p.name for p in policy.parent.iterdir()) == ["policy.rules"]


def test_the_file_is_synced_before_it_replaces_the_old_one(
        run: Run, policy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        events.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    assert run("compile", "policy.rules", "-o", "rules.v4", cwd=policy.parent)[0] == 0
    assert events == ["file", "replace", "dir"]


def test_a_killed_compile_leaves_no_temporary_file(policy: Path) -> None:
    """SIGKILL while the output is being written: the directory holds what it held before."""
    script = (
        "import os, signal, sys\n"
        "from rulec import cli\n"
        "os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)\n"
        "sys.exit(cli.main(['compile', 'policy.rules', '-o', 'rules.v4']))\n"
    )
    (policy.parent / "rules.v4").write_text("old\n", encoding="utf-8")
    done = subprocess.run([sys.executable, "-c", script], cwd=policy.parent, timeout=60,
                          capture_output=True, text=True)
    assert done.returncode == -9, done.stderr
    assert sorted(p.name for p in policy.parent.iterdir()) == ["policy.rules", "rules.v4"]
    assert (policy.parent / "rules.v4").read_text(encoding="utf-8") == "old\n"


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="a read-only mount needs root and unshare(1)")
def test_a_read_only_filesystem_is_a_clean_error(policy: Path) -> None:
    readonly = policy.parent / "ro"
    readonly.mkdir()
    # A private mount namespace: the read-only tmpfs exists only for this command.
    script = (f"mount -t tmpfs -o ro none {readonly} && exec {sys.executable} -m rulec "
              f"compile {policy} -o {readonly}/rules.v4")
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                           script], capture_output=True, text=True, timeout=60)
    assert done.returncode == cli.EXIT_USAGE, done.stderr
    assert "cannot write" in done.stderr and "Read-only file system" in done.stderr
    assert "Traceback" not in done.stderr
