"""Every command the README tells a user to type exists: make targets, ``leakk`` subcommands
and their flags, Snakemake's and DVC's flags and subcommands (a newcomer copies them literally)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(?:bash|sh|console|shell)\s*\n(.*?)^```", re.S | re.M)


def shell_lines(text: str) -> list[str]:
    """Commands of the shell code blocks: comments and continuation lines folded away."""
    lines = []
    for block in FENCE.findall(text):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split(" #", 1)[0].strip().removeprefix("$ ")
            if line and not line.startswith("#"):
                lines.extend(part.strip() for part in re.split(r"&&|\|\||;|\|", line) if part.strip())
    return lines


def commands(tool: str) -> list[tuple[str, list[str]]]:
    found = []
    for doc in DOCS:
        for line in shell_lines(doc.read_text()):
            try:
                words = shlex.split(line)
            except ValueError:
                continue
            while words and ("=" in words[0] and not words[0].startswith("-")):  # VAR=value prefixes
                words = words[1:]
            if words and words[0] in (tool, f".venv/bin/{tool}"):
                found.append((doc.name, words[1:]))
    return found


def make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z][\w-]*):", text, re.M))


def test_the_readme_has_shell_blocks_to_check():
    assert commands("make"), "no `make` command found in the README's shell blocks"
    assert commands("leakk"), "no `leakk` command found in the README's shell blocks"


@pytest.mark.parametrize("doc,words", commands("make"), ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_make_targets_exist(doc, words):
    targets = [w for w in words if not w.startswith("-") and "=" not in w]
    missing = [t for t in targets if t not in make_targets()]
    assert not missing, f"{doc}: make {' '.join(words)}: no such target {missing}"


@cache
def leakk_parser():
    from leakk.cli import build_parser

    return build_parser()


def _subparsers(parser):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices
    return {}


def _flags(parser) -> set[str]:
    return {flag for action in parser._actions for flag in action.option_strings}


@pytest.mark.parametrize("doc,words", commands("leakk"), ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_leakk_commands_and_flags_exist(doc, words):
    parser = leakk_parser()
    global_flags = _flags(parser)
    subs = _subparsers(parser)
    rest = list(words)
    while rest and rest[0].startswith("-"):  # global options before the command
        flag = rest.pop(0).split("=", 1)[0]
        assert flag in global_flags, f"{doc}: leakk {' '.join(words)}: no global option {flag}"
        if flag in ("--params", "--threads") and rest and "=" not in flag:
            rest.pop(0)
    if not rest or rest[0] in ("-h", "--help"):
        return
    command = rest.pop(0)
    assert command in subs, f"{doc}: leakk {' '.join(words)}: no command {command!r} (have {sorted(subs)})"
    flags = _flags(subs[command]) | global_flags
    if "--" in rest:  # what follows `--` is passed through to Snakemake
        rest = rest[:rest.index("--")]
    for word in rest:
        if word.startswith("--"):
            flag = word.split("=", 1)[0]
            assert flag in flags, f"{doc}: leakk {' '.join(words)}: `{command}` has no option {flag}"


@cache
def tool_help(tool: str, *sub: str) -> str:
    exe = shutil.which(tool) or str(Path(sys.executable).with_name(tool))
    out = subprocess.run([exe, *sub, "--help"], capture_output=True, text=True, timeout=120)
    return out.stdout + out.stderr


@pytest.mark.parametrize("doc,words", commands("snakemake"), ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_snakemake_flags_exist(doc, words):
    text = tool_help("snakemake")
    for word in words:
        if word.startswith("--"):
            flag = word.split("=", 1)[0]
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text), \
                f"{doc}: snakemake {' '.join(words)}: snakemake has no option {flag}"


@pytest.mark.parametrize("doc,words", commands("dvc"), ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_dvc_commands_exist(doc, words):
    positional = [w for w in words if not w.startswith("-")]
    if not positional:
        return
    sub = positional[:2] if positional[0] in ("exp", "metrics", "plots", "remote", "stage") else positional[:1]
    text = tool_help("dvc", *sub)
    assert "usage:" in text and "invalid choice" not in text, f"{doc}: dvc {' '.join(words)}: {text[-300:]}"
    for word in words:
        if word.startswith("--"):
            flag = word.split("=", 1)[0]
            assert flag in text, f"{doc}: dvc {' '.join(words)}: no option {flag}"


def test_the_first_screen_holds_the_two_commands_and_the_key_figure():
    lines = (ROOT / "README.md").read_text().splitlines()
    first = "\n".join(lines[:60])
    assert "make run" in first and "make test" in first
    assert re.search(r"!\[[^\]]*\]\(docs/[\w.-]+\.png\)", first), "the key figure is not on the first screen"
    assert "**Contents:**" in first  # the table of contents
    assert len(lines) <= 250, f"README.md has {len(lines)} lines; deep material belongs in docs/"


def test_every_local_link_of_the_docs_resolves():
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            assert (doc.parent / target).exists(), f"{doc.relative_to(ROOT)}: link to {target}, which does not exist"
