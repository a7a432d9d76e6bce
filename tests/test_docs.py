"""Every command of README.md and docs/ is checked against the code, so a documented command
cannot rot: each one (in code blocks and in inline code) is parsed by the tool's own
argument parser — an option that was renamed or removed fails here — and for
``train_online.py`` its config file and ``section.key=value`` overrides are loaded (a key
that no longer exists, a wrong type, a missing config file fail here). Commands of other
projects (iw3's ``train.py``, ``python -m iw3.cli``) and placeholders (``MY_PHOTOS/``) are
left alone; the files a command names inside this repository (configs, benchmarks) must
exist. The bundled-default commands of the README run for real in CI (they are CI)."""
import argparse
import importlib
import importlib.util
import re
import shlex
import sys
from pathlib import Path

import pytest

from inpaint_online.config import load_config

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
OURS = re.compile(r"^(?:python3?|torchrun\b.*?)\s+(?:-m\s+inpaint_online\.\w+|\S*(?:precompute_depth|"
                  r"train_online)\.py|benchmarks/\w+\.py)")


def doc_commands() -> list[tuple[str, str]]:
    """``(where, command)`` for every command of ours in the docs: fenced blocks (with
    ``\\`` continuations joined) and inline code spans; ``&&`` chains split; ``.venv/bin/``
    and environment assignments dropped."""
    found = []
    for f in DOCS:
        text = f.read_text(encoding="utf-8")
        blocks = re.findall(r"```[a-z]*\n(.*?)```", text, re.S)
        lines = [ln for b in blocks for ln in b.replace("\\\n", " ").splitlines()]
        rest = re.sub(r"```[a-z]*\n.*?```", "", text, flags=re.S)
        lines += re.findall(r"`([^`\n]+)`", rest)
        for line in lines:
            for cmd in line.split("&&"):
                cmd = cmd.split(" #")[0].strip()
                cmd = re.sub(r"(^|\s)\.venv/bin/", r"\1", cmd)
                cmd = re.sub(r"^(\w+=\S*\s+)+", "", cmd)
                cmd = normalise(cmd)
                if OURS.match(cmd):
                    found.append((f.name, cmd))
    return sorted(set(found))


# what the docs write for "a value of your choice", as a value the parsers take
PLACEHOLDERS = {"--level L": "--level 1", "--checkpoint …": "--checkpoint CKPT",
                "--out …": "--out OUT"}


def normalise(cmd: str) -> str:
    """A documented synopsis as one command line: ``[--opt X]`` and ``[key=value]`` are
    optional parts (kept), ``[overrides]`` a mention (dropped), ``a|b|c`` alternatives (the
    first), placeholders as values (:data:`PLACEHOLDERS`), a trailing ``...`` dropped."""
    for k, v in PLACEHOLDERS.items():
        cmd = cmd.replace(k, v)
    cmd = re.sub(r"(?<=\s)\[([^\]]*)\]", lambda m: m.group(1) if m.group(1).startswith("-") or "=" in
                 m.group(1) else "", cmd)
    cmd = re.sub(r"(?<=\s)([\w.-]+)(\|[\w.-]+)+(?=\s|$)", r"\1", cmd)
    return re.sub(r"\s+(\.\.\.|…)(?=\s|$)", "", cmd).strip()


COMMANDS = doc_commands()


class Parsed(Exception):
    def __init__(self, ns, parser):
        self.ns, self.parser = ns, parser


@pytest.fixture
def parse_only(monkeypatch):
    """The parsers parse (and fail on a bad option, as for a user), then stop the tool before
    any work: ``parse_args``, ``parse_intermixed_args`` and a top-level ``parse_known_args``."""
    P = argparse.ArgumentParser
    originals = {name: getattr(P, name) for name in
                 ("parse_args", "parse_intermixed_args", "parse_known_args")}
    inside = []

    def full(name):
        def parse(self, *a, **kw):
            inside.append(name)
            try:
                ns = originals[name](self, *a, **kw)
            finally:
                inside.pop()
            raise Parsed(ns, self)
        return parse

    def known(self, *a, **kw):
        out = originals["parse_known_args"](self, *a, **kw)
        if inside:
            return out
        raise Parsed(out[0], self)
    monkeypatch.setattr(P, "parse_args", full("parse_args"))
    monkeypatch.setattr(P, "parse_intermixed_args", full("parse_intermixed_args"))
    monkeypatch.setattr(P, "parse_known_args", known)


def entry_point(argv: list[str]):
    """``(main, args)`` of a command line of ours."""
    if argv[0] == "torchrun":
        argv = ["python", *argv[next(i for i, a in enumerate(argv) if a.endswith(".py")):]]
    if argv[1] == "-m":
        return importlib.import_module(argv[2]).main, argv[3:]
    script = ROOT / argv[1]
    assert script.is_file(), f"{argv[1]}: no such file in the repository"
    if script.name == "train_online.py":
        from inpaint_online.train.cli import main
        return main, argv[2:]
    if script.name == "precompute_depth.py":
        from inpaint_online.cache.cli import main
        return main, argv[2:]
    spec = importlib.util.spec_from_file_location(f"doc_{script.stem}", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)

    def run(args):                      # benchmarks read sys.argv
        old = sys.argv
        sys.argv = [str(script), *args]
        try:
            return mod.main()
        finally:
            sys.argv = old
    return run, argv[2:]


def test_the_docs_have_commands_to_check():
    tools = {c.split()[1] if c.split()[1] != "-m" else c.split()[2] for _, c in COMMANDS}
    assert len(COMMANDS) > 30 and {"train_online.py", "precompute_depth.py",
                                   "inpaint_online.stereo", "inpaint_online.compare"} <= tools


@pytest.mark.parametrize("where, command", COMMANDS, ids=[f"{w}: {c[:60]}" for w, c in COMMANDS])
def test_a_documented_command_parses_as_written(where, command, parse_only, capsys, tmp_path,
                                                monkeypatch):
    monkeypatch.chdir(tmp_path)         # were a tool ever to run past its parser: not in the repo
    argv = shlex.split(command)
    main, args = entry_point(argv)
    if not args:                        # a mention of the tool ("... with `python -m X`")
        return
    try:
        main(args)
    except Parsed as p:
        ns = p.ns
    except SystemExit as e:             # argparse's own error exit
        pytest.fail(f"{where}: `{command}` is refused: {capsys.readouterr().err.strip()} ({e})")
    else:
        pytest.fail(f"{where}: `{command}` ran without parsing its arguments")
    if main.__module__ == "inpaint_online.train.cli":
        config = getattr(ns, "config", None)
        if config:
            assert (ROOT / config).is_file(), f"{where}: {config}: no such config"
        load_config(str(ROOT / config) if config else None, list(getattr(ns, "overrides", []) or []))
