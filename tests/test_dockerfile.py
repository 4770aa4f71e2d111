"""The Dockerfile, checked without Docker: every file it copies exists or is made by the
stage it comes from, its ENTRYPOINT and CMD resolve to the installed `lifebox`, it builds with
the Rust toolchain setup.sh installs and the Python versions constraints.txt pins, and the
build context leaves out secrets and the host's build."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.helpers.compose import ROOT, image, services, stages

LIFEBOX = Path(sys.executable).parent / "lifebox"


def _workdir_and_copies(
    stage: list[tuple[str, str]],
) -> tuple[str, list[tuple[str, list[str], str]]]:
    """The stage's last WORKDIR and its COPYs as (from-stage or '', sources, destination)."""
    workdir, copies = "/", []
    for keyword, rest in stage:
        if keyword == "WORKDIR":
            workdir = rest
        elif keyword == "COPY":
            parts = rest.split()
            source_stage = ""
            while parts[0].startswith("--"):
                flag = parts.pop(0)
                if flag.startswith("--from="):
                    source_stage = flag.removeprefix("--from=")
            copies.append((source_stage, parts[:-1], parts[-1]))
    return workdir, copies


def test_every_copied_file_of_the_context_exists_and_is_not_ignored() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for stage in stages():
        for source_stage, sources, _ in _workdir_and_copies(stage)[1]:
            if source_stage:
                continue
            for source in sources:
                assert (ROOT / source).exists(), f"the Dockerfile copies missing {source}"
                assert source not in ignored, f"{source} is in .dockerignore"


def test_what_the_final_stage_copies_from_the_build_stage_is_made_there() -> None:
    build, final = stages()[0], stages()[-1]
    assert build[0][1].endswith(" AS build")
    workdir, build_copies = _workdir_and_copies(build)
    runs = " ".join(rest for keyword, rest in build if keyword == "RUN")
    made = {"/wheels": "--out /wheels" in runs}
    made[f"{workdir}/target/release/lifebox-loadgen"] = "-p lifebox-loadgen" in runs
    for _, sources, destination in build_copies:
        for source in sources:
            target = destination if destination not in ("./", ".") else source
            made[f"{workdir}/{target}".replace("//", "/").rstrip("/")] = True
    for source_stage, sources, _ in _workdir_and_copies(final)[1]:
        if source_stage:
            assert source_stage == "build"
            for source in sources:
                assert made.get(source.rstrip("/")), f"the build stage makes no {source}"


def test_entrypoint_and_cmd_resolve_to_the_installed_lifebox() -> None:
    built = image()
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert built.entrypoint[0] in scripts, "ENTRYPOINT is not a console script the wheel installs"
    assert LIFEBOX.exists()
    result = subprocess.run(
        [str(LIFEBOX), *built.entrypoint[1:], *built.cmd, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert built.user not in ("root", "0")
    # The CA key is 0640 for serve: compose's device-pki gives it to the image's user.
    uid = next(rest for kw, rest in stages()[-1] if kw == "RUN" and "useradd" in rest)
    assert re.search(r"--uid (\d+)", uid).group(1) == "10001"  # type: ignore[union-attr]
    assert "--key-owner" in services()["device-pki"]["command"]
    key_owner = services()["device-pki"]["command"]
    assert key_owner[key_owner.index("--key-owner") + 1].startswith("10001:")


def test_pip_in_the_image_installs_the_pinned_versions() -> None:
    for stage in stages():
        for keyword, rest in stage:
            if keyword == "RUN" and "pip install" in rest:
                assert "constraints.txt" in rest, f"unpinned: {rest}"
    pins = (ROOT / "constraints.txt").read_text()
    assert re.search(r"^maturin==", pins, re.M)
    # The image's Python is the one the constraints were resolved for.
    base = image().base
    assert base.startswith("python:3.11-"), base
    assert all(s[0][1].startswith("python:3.11-slim-bookworm") for s in stages())


def test_the_image_builds_rust_with_the_toolchain_setup_installs() -> None:
    build = stages()[0]
    runs = " ".join(rest for keyword, rest in build if keyword == "RUN")
    setup = (ROOT / "scripts/setup.sh").read_text()
    packages = re.search(r"^RUST_APT=\(([^)]*)\)", setup, re.M)
    assert packages
    for package in ("rustc-web", "cargo-web"):
        assert package in packages.group(1).split()
        assert package in runs
    assert "rustup" not in runs, "one toolchain source (Debian's), not a script from the web"
    assert "--locked" in runs


def test_debian_12_offers_a_rust_toolchain_as_new_as_the_workspace_needs() -> None:
    """The image (bookworm) and setup.sh both rely on it."""
    if shutil.which("apt-cache") is None:
        pytest.skip("not a Debian system (no apt-cache)")
    policy = subprocess.run(
        ["apt-cache", "policy", "rustc-web"], capture_output=True, text=True, check=False
    ).stdout
    candidate = re.search(r"Candidate: (\d+)\.(\d+)", policy)
    if candidate is None:
        pytest.skip("apt knows no rustc-web here (package lists not read)")
    need = tomllib.loads((ROOT / "Cargo.toml").read_text())["workspace"]["package"]["rust-version"]
    major, minor = (int(x) for x in need.split(".")[:2])
    assert (int(candidate.group(1)), int(candidate.group(2))) >= (major, minor), policy


def test_the_build_context_leaves_out_secrets_and_host_builds() -> None:
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    for entry in (".env", ".lifebox", ".venv", "target", "node_modules", "**/*.so", "certs"):
        assert entry in ignored, f".dockerignore lacks {entry}"
