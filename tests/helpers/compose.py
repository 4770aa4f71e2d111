"""docker-compose.yml and the Dockerfile read the way Docker reads them (Docker cannot run
here, so the tests that keep compose honest compute what it would run): the image's ENTRYPOINT,
CMD and ENV, a service's effective argv, and its environment with every ``${…}`` filled from a
.env made like README says (every key of .env.example given a value)."""

from __future__ import annotations

import re
import secrets
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "lifebox:local"
SHELLS = (["/bin/sh", "-c"], ["sh", "-c"], ["/bin/bash", "-c"])
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}, $NAME, $$
_VARIABLE = re.compile(
    r"\$\$|\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|\$(?P<bare>[A-Za-z_]\w*)"
)


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def lifebox_services() -> dict[str, dict[str, Any]]:
    """The services that run our image (built from the Dockerfile)."""
    return {n: s for n, s in services().items() if s.get("image") == IMAGE or "build" in s}


def dotenv() -> dict[str, str]:
    """A .env as README says to make it: .env.example with every empty value filled."""
    values = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip() or secrets.token_urlsafe(33)
    return values


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's variable substitution; a required variable that is unset is an error."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("name") or match.group("bare")
        op, arg = match.group("op"), match.group("arg") or ""
        present = name in env and (env[name] != "" or not (op or "").startswith(":"))
        if present:
            return env[name]
        if op in (":?", "?"):
            raise KeyError(f"${{{name}}} is required: {arg}")
        if op in (":-", "-"):
            return interpolate(arg, env)
        return ""

    return _VARIABLE.sub(replace, value)


@dataclass(frozen=True)
class Image:
    """The Dockerfile's final stage, as `docker run` sees it."""

    entrypoint: list[str]
    cmd: list[str]
    env: dict[str, str]
    user: str
    base: str
    exposed: set[int]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    out = []
    for line in joined.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        keyword, _, rest = line.strip().partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out


def stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's build stages, each starting with its FROM."""
    found: list[list[tuple[str, str]]] = []
    for instruction in dockerfile_instructions():
        if instruction[0] == "FROM":
            found.append([])
        if found:
            found[-1].append(instruction)
    return found


def _exec_form(text: str) -> list[str]:
    parsed = yaml.safe_load(text)
    assert isinstance(parsed, list), f"not exec form: {text}"
    return [str(part) for part in parsed]


def image() -> Image:
    final = stages()[-1]
    entrypoint: list[str] = []
    cmd: list[str] = []
    env: dict[str, str] = {}
    user = "root"
    exposed: set[int] = set()
    for keyword, rest in final:
        if keyword == "ENTRYPOINT":
            entrypoint = _exec_form(rest)
            cmd = []  # Docker: a new ENTRYPOINT clears an inherited CMD
        elif keyword == "CMD":
            cmd = _exec_form(rest)
        elif keyword == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                env[key] = value
        elif keyword == "USER":
            user = rest
        elif keyword == "EXPOSE":
            exposed |= {int(p.split("/")[0]) for p in rest.split()}
    return Image(entrypoint, cmd, env, user, final[0][1].split()[0], exposed)


def _argv(value: str | list[str]) -> list[str]:
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


def effective_argv(service: Mapping[str, Any], env: Mapping[str, str]) -> list[str]:
    """What Docker runs for a service of our image: the service's entrypoint or the image's,
    then its command, or the image's CMD only when the entrypoint is the image's (a service
    that sets an entrypoint drops the image's CMD), with compose's interpolation."""
    built = image()
    if "entrypoint" in service:
        argv = _argv(service["entrypoint"]) + _argv(service.get("command", []))
    else:
        argv = built.entrypoint + _argv(service.get("command", built.cmd))
    return [interpolate(part, env) for part in argv]


def lifebox_invocations(argv: list[str]) -> list[list[str]]:
    """Each `lifebox …` command an argv runs: itself, or each command of a `sh -c` chain
    joined by &&. Anything else is an error: our image runs lifebox and nothing else."""
    if argv[:2] in SHELLS:
        assert len(argv) == 3, f"sh -c takes one script, got {argv}"
        lexer = shlex.shlex(argv[2], posix=True, punctuation_chars="&;|")
        lexer.whitespace_split = True
        parts: list[list[str]] = [[]]
        for token in lexer:
            assert token in ("&&",) or not set(token) <= set("&;|"), f"only && chains: {argv}"
            if token == "&&":
                parts.append([])
            else:
                parts[-1].append(token)
        invocations = parts
    else:
        invocations = [argv]
    for invocation in invocations:
        assert invocation, f"an empty command in {argv}"
        assert invocation[0] == "lifebox", f"runs {invocation}, not lifebox"
    return invocations


def service_environment(service: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, str]:
    """The container's environment: the image's ENV under the service's, interpolated."""
    raw = service.get("environment", {})
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) for item in raw)
    own = {str(k): interpolate(str(v), env) for k, v in raw.items()}
    return {**image().env, **own} if service.get("image") == IMAGE else own
