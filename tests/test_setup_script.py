"""scripts/setup.sh checks every prerequisite before it installs anything and prints one line
that fixes each (run here as an unprivileged user on a PATH without the tools, so it can only
report), and scripts/buf_breaking.sh (`make lint`) catches a wire break, accepts one a commit
says is intended, and finds its baseline in a shallow clone."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUF = ROOT / "node_modules" / ".bin" / "buf"
# What the checks themselves need: a shell and coreutils, dpkg and apt-cache.
BASE_TOOLS = (
    "bash",
    "dpkg",
    "dpkg-query",
    "apt-cache",
    "sed",
    "sort",
    "head",
    "awk",
    "id",
    "grep",
    "dirname",
    "cat",
    "env",
    "find",
    "tr",
)


@pytest.fixture
def bare_path() -> Iterator[Path]:
    """A checkout's setup.sh and Cargo.toml, and a bin folder with only BASE_TOOLS."""
    base = Path(tempfile.mkdtemp(prefix="lifebox-test-setup-"))
    base.chmod(0o755)
    (base / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "setup.sh", base / "scripts" / "setup.sh")
    shutil.copy(ROOT / "Cargo.toml", base / "Cargo.toml")
    bin_dir = base / "bin"
    bin_dir.mkdir()
    for tool in BASE_TOOLS:
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    for path in base.rglob("*"):
        if not path.is_symlink():
            path.chmod(path.stat().st_mode | stat.S_IRGRP | stat.S_IROTH | stat.S_IXOTH)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _fake(bin_dir: Path, name: str, output: str) -> None:
    tool = bin_dir / name
    tool.write_text(f"#!/bin/sh\necho '{output}'\n")
    tool.chmod(0o755)


def _run_setup(base: Path) -> subprocess.CompletedProcess[str]:
    """setup.sh as an unprivileged user (as root it would install what is missing)."""
    if shutil.which("dpkg") is None or shutil.which("apt-cache") is None:
        pytest.skip("not a Debian system")
    argv = ["bash", str(base / "scripts" / "setup.sh")]
    if os.getuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("root without setpriv (util-linux): setup.sh would install")
        argv = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
    env = {"PATH": str(base / "bin"), "HOME": str(base)}
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_a_bare_system_gets_one_apt_line_naming_every_missing_package(bare_path: Path) -> None:
    result = _run_setup(bare_path)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if "apt-get install -y" in line]
    assert len(lines) == 1, result.stderr
    packages = set(lines[0].split("apt-get install -y", 1)[1].split())
    expected = {"python3", "python3-venv", "build-essential", "make", "git", "nodejs", "npm"}
    expected |= {"rustc-web", "cargo-web", "rust-web-clippy", "rustfmt-web"}
    assert expected <= packages, expected - packages
    assert not (bare_path / ".venv").exists(), "it went on after reporting"


def test_a_cargo_older_than_the_workspace_wants_is_replaced_by_debians_rust_web(
    bare_path: Path,
) -> None:
    _fake(bare_path / "bin", "cargo", "cargo 1.63.0")  # bookworm's own cargo
    result = _run_setup(bare_path)
    assert result.returncode == 1
    assert "rustc-web cargo-web rust-web-clippy rustfmt-web" in result.stderr, result.stderr


def test_a_rustup_toolchain_is_kept_and_told_to_update(bare_path: Path) -> None:
    _fake(bare_path / "bin", "cargo", "cargo 1.70.0 (abc 2023-06-01)")
    _fake(bare_path / "bin", "rustup", "rustfmt-x86_64-unknown-linux-gnu")
    result = _run_setup(bare_path)
    assert result.returncode == 1
    assert "rustup update stable" in result.stderr, result.stderr
    assert "rustup component add clippy" in result.stderr
    assert "rustc-web" not in result.stderr, "Debian's packages conflict with rustup"


# --- buf breaking ---
def _git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    return subprocess.run(
        ["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=True
    ).stdout


PROTO = 'syntax = "proto3";\npackage x.v1;\n// M.\nmessage M {\n  // a.\n  string a = 1;\n%s}\n'


@pytest.fixture
def proto_repo() -> Iterator[Path]:
    """A repository with protos/, buf.yaml as ours, the script, and two commits."""
    if not BUF.exists():
        pytest.skip("node_modules has no buf (npm ci)")
    base = Path(tempfile.mkdtemp(prefix="lifebox-test-buf-"))
    repo = base / "repo"
    (repo / "protos" / "x" / "v1").mkdir(parents=True)
    (repo / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "buf_breaking.sh", repo / "scripts")
    shutil.copy(ROOT / "protos" / "buf.yaml", repo / "protos")
    (repo / "node_modules").symlink_to(ROOT / "node_modules")
    (repo / ".gitignore").write_text("node_modules\n")
    _git(repo, "init", "-q")
    (repo / "protos/x/v1/m.proto").write_text(PROTO % "  // b.\n  string b = 2;\n")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "one")
    try:
        yield repo
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _check(repo: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "scripts/buf_breaking.sh"],
        cwd=repo,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_deleted_field_fails_and_the_next_commit_compares_with_it(proto_repo: Path) -> None:
    (proto_repo / "protos/x/v1/m.proto").write_text(PROTO % "")
    _git(proto_repo, "commit", "-qam", "drop b")
    broken = _check(proto_repo)
    assert broken.returncode != 0
    assert 'field "2" with name "b"' in broken.stdout + broken.stderr
    _git(proto_repo, "commit", "-q", "--allow-empty", "-m", "later")
    assert _check(proto_repo).returncode == 0  # HEAD~1 already had the break


def test_a_break_the_commit_accepts_passes(proto_repo: Path) -> None:
    (proto_repo / "protos/x/v1/m.proto").write_text(PROTO % "")
    _git(proto_repo, "commit", "-qam", "drop b\n\nProto-Breaking: accepted")
    result = _check(proto_repo)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "against HEAD" in result.stdout


def test_with_a_release_tag_the_tag_is_the_baseline(proto_repo: Path) -> None:
    _git(proto_repo, "tag", "v1.0.0")
    _git(proto_repo, "commit", "-q", "--allow-empty", "-m", "two")
    (proto_repo / "protos/x/v1/m.proto").write_text(PROTO % "")
    _git(proto_repo, "commit", "-qam", "drop b")
    _git(proto_repo, "commit", "-q", "--allow-empty", "-m", "later")
    result = _check(proto_repo)
    assert result.returncode != 0, "the break since v1.0.0 must still fail"
    assert "against v1.0.0" in result.stdout


def test_a_shallow_clone_fetches_the_previous_commit(proto_repo: Path) -> None:
    _git(proto_repo, "commit", "-q", "--allow-empty", "-m", "two")
    clone = proto_repo.parent / "clone"
    subprocess.run(
        ["git", "clone", "-q", "--depth", "1", f"file://{proto_repo}", str(clone)], check=True
    )
    (clone / "node_modules").symlink_to(ROOT / "node_modules")
    assert _git(clone, "rev-parse", "--is-shallow-repository").strip() == "true"
    result = _check(clone)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "against HEAD~1" in result.stdout


def test_outside_git_it_says_it_skips(tmp_path: Path) -> None:
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "buf_breaking.sh", tmp_path / "scripts")
    result = _check(tmp_path, GIT_CEILING_DIRECTORIES=str(tmp_path.parent))
    assert result.returncode == 0
    assert "skipped: not a git checkout" in result.stdout


# --- make fresh-check ---
def test_fresh_check_is_a_make_task_outside_make_test_and_parses() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "\nfresh-check:" in makefile
    test_line = next(line for line in makefile.splitlines() if line.startswith("test:"))
    assert "fresh-check" not in test_line, "slow: never part of make test"
    script = ROOT / "scripts" / "fresh_check.sh"
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
    text = script.read_text()
    # README's commands, as root, from a bare system; mounts undone whatever happens.
    for needed in (
        "debootstrap --variant=minbase bookworm",
        "make run",
        "make test",
        "trap cleanup EXIT",
        "unshare --mount",
        "apt-get install -y -qq make git",
    ):
        assert needed in text, needed
    readme = (ROOT / "README.md").read_text()
    assert "apt-get install -y make git ca-certificates" in readme
