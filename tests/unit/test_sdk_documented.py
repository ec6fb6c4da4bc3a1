"""docs/sdk.md shows the SDK as it is.

- Every public name of `kubelock.sdk` (`__all__`) is named in it.
- Every method signature its tables show (`LockClient(...)`, the client's and `AsyncAdmin`'s methods,
  the tools) has the parameters, their order, their defaults and the `*` the code has.
- Every Python block of it (and of README.md) parses, imports only names that exist, and calls on
  `client.` and `lease.` only what a client and a lease have.

A name, a parameter or a default changed on one side only fails here.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path
from typing import Any

import pytest

import kubelock.sdk
from kubelock.sdk import AsyncAdmin, AsyncLease, AsyncLockClient, Lease, LockClient, tools

REPO = Path(__file__).resolve().parents[2]
SDK_MD = (REPO / "docs" / "sdk.md").read_text()
# Each section, what its signatures are of, and whether they are in its tables (the tools' table shows
# calls with values; their signatures are in the text).
OWNERS: dict[str, tuple[Any, bool]] = {"The client": (AsyncLockClient, True),
                                       "Administration: `AsyncAdmin`": (AsyncAdmin, True),
                                       "Tools for LLM agents": (tools, False)}


def section(title: str, text: str = SDK_MD) -> str:
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def documented_calls(text: str, *, tables: bool) -> list[tuple[str, str]]:
    """Each `name(parameters)` in backticks that starts a row of a table of `text` (`tables`), or that
    stands in its running text with its parameters written out as in a `def` (not `tables`)."""
    if tables:
        rows = re.findall(r"^\| `(\w+)\(((?:[^`()]|\(\))*)\)`", text, flags=re.M)
        return [(name, params) for name, params in rows if "..." not in params]
    prose = " ".join(line for line in text.splitlines() if not line.startswith("|"))
    return [(name, params) for name, params in re.findall(r"`(\w+)\(([^`()]*)\)`", prose)
            if "=" in params and "..." not in params]


def parameters(params: str) -> list[tuple[str, object]]:
    """`uri, ttl=None, *, mode="Exclusive"` as [(name, default or inspect.Parameter.empty), ...], with
    `*` kept as a name."""
    tree = ast.parse(f"def f({params}): pass").body[0]
    assert isinstance(tree, ast.FunctionDef)
    args = tree.args
    out: list[tuple[str, object]] = []
    positional = args.args
    defaults = [inspect.Parameter.empty] * (len(positional) - len(args.defaults)) + [
        ast.literal_eval(d) for d in args.defaults]
    out += [(a.arg, d) for a, d in zip(positional, defaults, strict=True)]
    if args.kwonlyargs:
        out.append(("*", inspect.Parameter.empty))
        out += [(a.arg, inspect.Parameter.empty if d is None else ast.literal_eval(d))
                for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True)]
    return out


def actual(function: Any) -> list[tuple[str, object]]:
    out: list[tuple[str, object]] = []
    starred = False
    for p in inspect.signature(function).parameters.values():
        if p.name == "self":
            continue
        if p.kind is p.KEYWORD_ONLY and not starred:
            out.append(("*", inspect.Parameter.empty))
            starred = True
        out.append((p.name, p.default))
    return out


def signatures() -> list[tuple[str, str, str]]:
    """(section, name, parameters) of each signature the sections of OWNERS show for their owner."""
    return [(title, name, params) for title, (owner, tables) in OWNERS.items()
            for name, params in documented_calls(section(title), tables=tables) if hasattr(owner, name)]


def test_signatures_are_found() -> None:
    found = {(title, name) for title, name, _ in signatures()}
    assert {("The client", "lock"), ("The client", "acquire"), ("Administration: `AsyncAdmin`", "break_locks"),
            ("Tools for LLM agents", "acquire_locks")} <= found


@pytest.mark.parametrize(("title", "name", "params"), signatures())
def test_a_documented_signature_is_the_codes(title: str, name: str, params: str) -> None:
    owner = OWNERS[title][0]
    assert parameters(params) == actual(getattr(owner, name)), f"docs/sdk.md, {title}: {name}({params})"


def test_the_constructor_is_as_documented() -> None:
    shown = re.search(r"`LockClient\(([^`]*)\)`", section("The client"))
    assert shown is not None
    assert parameters(shown.group(1).replace("\n", " ")) == actual(LockClient.__init__) == actual(
        AsyncLockClient.__init__)


def test_a_changed_default_is_found() -> None:
    assert parameters("uri, *, confirm=False") != actual(AsyncLockClient.heartbeat)
    assert parameters("uri, confirm=True") != actual(AsyncLockClient.heartbeat)


@pytest.mark.parametrize("name", kubelock.sdk.__all__)
def test_every_public_name_is_documented(name: str) -> None:
    blocks = re.findall(r"^```\w*\n(.*?)^```", SDK_MD, flags=re.M | re.S)
    code = blocks + re.findall(r"`([^`\n]+)`", re.sub(r"^```\w*\n.*?^```", "", SDK_MD, flags=re.M | re.S))
    assert any(re.search(rf"\b{name}\b", c) for c in code), f"kubelock.sdk.{name} is not in docs/sdk.md"


def python_blocks() -> list[tuple[str, str]]:
    out = []
    for doc in ("docs/sdk.md", "README.md"):
        text = (REPO / doc).read_text()
        out += [(doc, block) for block in re.findall(r"^```python\n(.*?)^```", text, flags=re.M | re.S)]
    return out


def attributes(cls: type) -> set[str]:
    """What instances of `cls` have: its class attributes and what its methods assign to `self.`."""
    source = "".join(inspect.getsource(c) for c in cls.__mro__ if c.__module__.startswith("kubelock"))
    return set(dir(cls)) | set(re.findall(r"self\.(\w+)\s*[:=]", source))


def test_the_python_blocks_are_found() -> None:
    assert len(python_blocks()) >= 6


@pytest.mark.parametrize(("doc", "block"), python_blocks())
def test_a_python_block_parses_and_uses_what_exists(doc: str, block: str) -> None:
    tree = ast.parse(block)  # a SyntaxError fails here
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kubelock"):
            module = __import__(node.module, fromlist=["_"])
            for alias in node.names:
                assert hasattr(module, alias.name), f"{doc}: {node.module} has no {alias.name}"
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id == "client":
                assert node.attr in attributes(LockClient) and node.attr in attributes(AsyncLockClient), (
                    f"{doc}: client.{node.attr}")
            if node.value.id == "lease":
                assert node.attr in attributes(Lease) and node.attr in attributes(AsyncLease), (
                    f"{doc}: lease.{node.attr}")
