"""The checks of ``tests/test_docs.py`` (issue 30: docs that cannot go stale silently), as
functions of a repository root, so they can also be run by hand against another checkout's
pages: the ``simsiam ...`` commands shown in README.md and docs/ (and the files the pages
include) and the real parser's answer to each, the config keys and presets they name, the
README's links, and ``mkdocs build --strict``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import io
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from simsiam.cli.parser import build_parser
from simsiam.config.load import config_keys, preset_names

FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)")
NOT_SHELL = {"python", "py", "pycon", "yaml", "yml", "json", "toml", "ini", "csv"}
# fences of printed output: only their "$ " lines are commands
OUTPUT = {"text", "console", "output", "txt"}
SECTIONS = ("method", "data", "augment", "model", "optim", "train", "eval")
# a dotted key of the schema: a section, then lower-case names; not inside a longer dotted
# name (simsiam.data.config) nor a path (runs/train.log)
KEY = re.compile(r"(?<![\w./-])(?:" + "|".join(SECTIONS) + r")(?:\.[a-z_][a-z0-9_]*)+(?![\w/(-])")
FILE_SUFFIXES = {"py", "pt", "pth", "yaml", "yml", "json", "jsonl", "csv", "tsv", "md", "png",
                 "jpg", "jpeg", "txt", "npz", "safetensors", "tar", "log", "html", "sh"}
# keys the docs name on purpose as wrong or old (the errors they get), by file
SHOWN_WRONG = {("RELIABILITY.md", "train.epoch"), ("RELIABILITY.md", "optim.fix_pred_lr")}
PLACEHOLDER = re.compile(r"<[^>]*>|\.\.\.|…|^[A-Z][A-Z0-9_]*$|^[A-Z][A-Z0-9_]*=[A-Z][A-Z0-9_]*$")


def doc_files(root: Path) -> list[Path]:
    """README.md, every page under docs/ (the generated reference pages are not files) and
    the files those pages include (``--8<-- "BENCHMARKS.md"``, pymdownx.snippets)."""
    pages = sorted((root / "docs").rglob("*.md"))
    included = {m.group(1).partition(":")[0] for page in pages
                for m in re.finditer(r'--8<--\s+"([^"]+)"', page.read_text("utf-8"))}
    extra = sorted(root / name for name in included if (root / name).is_file())
    return list(dict.fromkeys([root / "README.md"] + pages + extra))


def fences(text: str) -> list[tuple[str, list[tuple[int, str]]]]:
    """``(language, [(line number, line), ...])`` of each fenced block of markdown ``text``,
    and ``("", ...)`` of the prose between them as one block each (language ``None``)."""
    blocks: list = [(None, [])]
    fence = ""
    for number, line in enumerate(text.splitlines(), start=1):
        match = FENCE.match(line)
        if match and (not fence or match.group(2).startswith(fence)):
            fence = "" if fence else match.group(2)
            blocks.append((match.group(3).lower(), []) if fence else (None, []))
            continue
        blocks[-1][1].append((number, line))
    return [b for b in blocks if b[1]]


def code_pieces(text: str) -> list[tuple[int, str, str]]:
    """``(line, kind, text)`` of each piece of code in markdown ``text``: ``"fence"`` for
    each logical line of a shell-like fenced block (``\\`` continuations joined; in a
    transcript, a block of printed output or one with ``$`` prompts, only the prompted
    lines), ``"span"`` for each inline code span outside fences. ``line`` counts from 1."""
    pieces = []
    for lang, lines in fences(text):
        if lang is None:
            pieces += [(n, "span", m.group(1)) for n, line in lines
                       for m in re.finditer(r"`([^`\n]+)`", line)]
            continue
        if lang in NOT_SHELL:
            continue
        prompted = lang in OUTPUT or any(line.lstrip().startswith("$ ") for _, line in lines)
        pending, start = "", 0
        for number, line in lines:
            if not pending:
                start = number
                if prompted and not line.lstrip().startswith("$ "):
                    continue
            pending = f"{pending} {line.strip()}".strip()
            if pending.endswith("\\"):
                pending = pending[:-1].rstrip()
                continue
            pieces.append((start, "fence", pending.removeprefix("$ ")))
            pending = ""
    return pieces


def command_args(piece: str) -> list[list[str]]:
    """The argument lists of every ``simsiam`` command in one line of shell: a segment
    (split at ``&&``, ``||``, ``;``, ``|``, ``&``; a synopsis's ``[...]`` and
    ``a|b`` read as the first choice) whose first word (after ``VAR=value`` words) is
    ``simsiam`` or ``.../bin/simsiam``, or that runs ``-m simsiam`` (python, torchrun)."""
    found = []
    if "[" in piece:  # a synopsis: `simsiam reproduce EXPERIMENT [--scale cpu|cifar10]`
        piece = re.sub(r"[\[\]]", " ", piece)
        piece = re.sub(r"([^\s|]+)(?:\|[^\s|]+)+", r"\1", piece)
    for segment in re.split(r"&&|\|\||;|\||&", piece):
        try:
            words = shlex.split(segment, comments=True)
        except ValueError:  # an unbalanced quote: not a command
            continue
        while words and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", words[0]):
            words = words[1:]
        if words and Path(words[0]).name == "simsiam":
            if len(words) > 1 and words[1].endswith(":"):  # printed output: "simsiam bench: ..."
                continue
            found.append(words[1:])
        elif "-m" in words[:-1] and words[words.index("-m") + 1] == "simsiam":
            found.append(words[words.index("-m") + 2:])
    return found


def _placeholder(word: str) -> bool:
    return bool(PLACEHOLDER.search(word))


def _stand_in(action: argparse.Action | None) -> str:
    """A valid value for ``action`` standing in for a placeholder (``N``, ``<run>``)."""
    if action is None:
        return "x"
    if action.choices:
        return str(next(iter(action.choices)))
    low = getattr(action.type, "low", None)
    if low is not None:
        kind = action.type.kind
        return str(kind(low) + (kind(1) if action.type.low_open else kind(0)))
    if action.type in (int, float):
        return "1"
    return "x"


def fill_placeholders(parser: argparse.ArgumentParser, args: list[str],
                      complete: bool = True) -> list[str]:
    """``args`` with each placeholder value (``N``, ``<run>``, ``PATH...``) replaced by a
    valid one for its flag or positional, and lone ``...`` dropped; flags are kept as
    written, so an unknown flag still fails to parse. With ``complete`` False (a mention,
    not a whole command) a flag named without its value and the required arguments left
    out get stand-ins too."""
    args = [a for a in args if a not in ("...", "…", "[...]")]
    if not args or args[0] not in subparsers(parser):
        return args
    sub = subparsers(parser)[args[0]]
    options = {s: a for a in sub._actions for s in a.option_strings}
    positionals = [a for a in sub._actions if not a.option_strings]
    out, i, given, used = [args[0]], 1, set(), 0
    while i < len(args):
        word = args[i]
        if word.startswith("-") and len(word) > 1:
            name, eq, value = word.partition("=")
            action = options.get(name)
            given.add(action)
            out.append(f"{name}={_stand_in(action)}" if eq and _placeholder(value) else word)
            if action is not None and action.nargs not in (0, "?", "*") and not eq:
                if i + 1 < len(args) and not args[i + 1].startswith("-"):
                    i += 1
                    out.append(_stand_in(action) if _placeholder(args[i]) else args[i])
                elif not complete:
                    out.append(_stand_in(action))
        else:
            action = positionals[used] if used < len(positionals) else None
            used += 1
            out.append(_stand_in(action) if _placeholder(word) else word)
        i += 1
    if not complete:
        out += [v for a in sub._actions if a.required and a.option_strings and a not in given
                for v in (a.option_strings[0], _stand_in(a))]
        out += [_stand_in(a) for a in positionals[used:] if a.nargs not in ("?", "*")]
    return out


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def parse_error(parser: argparse.ArgumentParser, args: list[str], complete: bool) -> str:
    """argparse's message for ``args`` ("" when they parse; ``--help`` parses). With
    ``complete`` False (an inline mention, or a command shown with ``...``) a missing
    argument or value is no error (:func:`fill_placeholders`): only unknown subcommands,
    flags and bad values are."""
    if args and "/" in args[0]:  # `simsiam knn/linear/embed`: each of them
        errors = [parse_error(parser, [a] + args[1:], complete) for a in args[0].split("/")]
        return next((e for e in errors if e), "")
    if args and _placeholder(args[0]):  # `simsiam COMMAND --help`: fits some subcommand
        fits = [n for n in subparsers(parser) if not parse_error(parser, [n] + args[1:], False)]
        return "" if fits else f"no subcommand takes {shlex.join(args[1:])}"
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            parser.parse_args(fill_placeholders(parser, args, complete))
    except SystemExit as exc:
        message = err.getvalue().strip().splitlines()[-1:] or [f"exit {exc.code}"]
        if exc.code == 0:
            return ""
        return message[0]
    return ""


def command_problems(root: Path) -> tuple[int, list[str]]:
    """The number of ``simsiam`` commands in README.md and docs/ under ``root``, and one
    line (file:line, command, argparse's message) for each the real parser refuses."""
    parser, count, problems = build_parser(), 0, []
    for path in doc_files(root):
        for line, kind, piece in code_pieces(path.read_text("utf-8")):
            for args in command_args(piece):
                if not args:  # `simsiam` alone names the tool
                    continue
                count += 1
                complete = kind == "fence" and not any(a in ("...", "…") for a in args)
                error = parse_error(parser, args, complete)
                if error:
                    problems.append(f"{path.relative_to(root)}:{line}: `{piece}`: {error}")
    return count, problems


def named_keys(text: str) -> list[tuple[int, str]]:
    """``(line, key)`` of each config key named in the code of ``text`` (inline spans,
    fenced blocks, ``--set KEY=VALUE``); file names such as ``train.log`` are not keys."""
    found = []
    for line, _, piece in code_pieces(text) + _all_fence_lines(text):
        for match in KEY.finditer(piece):
            key = match.group(0)
            if key.rpartition(".")[2] not in FILE_SUFFIXES:
                found.append((line, key))
    return found


def _all_fence_lines(text: str) -> list[tuple[int, str, str]]:
    """Lines of the fences :func:`code_pieces` leaves out (Python, JSON: keys are named there
    too, ``--set`` in a Python list); YAML's keys are nested, not dotted."""
    return [(n, "fence", line) for lang, lines in fences(text)
            if lang in NOT_SHELL and lang not in ("yaml", "yml") for n, line in lines]


def code_name(key: str) -> bool:
    """Whether ``key`` names code rather than a setting: ``data.make_batches`` is
    :mod:`simsiam.data`'s function (its packages share the sections' names)."""
    package, leaf = key.split(".")[:2]
    try:
        module = importlib.import_module(f"simsiam.{package}")
    except ImportError:
        return False
    return leaf in dir(module) or importlib.util.find_spec(f"simsiam.{package}.{leaf}") is not None


def key_problems(root: Path) -> tuple[int, list[str]]:
    """The number of config keys named in README.md and docs/, and one line for each that
    is not a key (or section) of the schema, with the nearest keys."""
    keys, count, problems = set(config_keys()), 0, []
    for path in doc_files(root):
        for line, key in named_keys(path.read_text("utf-8")):
            count += 1
            if key not in keys and not code_name(key) and (path.name, key) not in SHOWN_WRONG:
                near = [k for k in keys if k.rpartition(".")[2] == key.rpartition(".")[2]]
                problems.append(f"{path.relative_to(root)}:{line}: {key} is not a config key"
                                + (f" (did you mean {', '.join(sorted(near))}?)" if near else ""))
    return count, problems


def preset_problems(root: Path) -> tuple[int, list[str]]:
    """The number of presets named (``--config NAME``, ``configs/NAME.yaml``) in README.md
    and docs/, and one line for each that is not shipped."""
    names, count, problems = set(preset_names()), 0, []
    pattern = re.compile(r"--config[ =]+['\"]?([\w./-]+)|(?<![\w/])configs/([\w.-]+?)\.ya?ml")
    for path in doc_files(root):
        for number, line in enumerate(path.read_text("utf-8").splitlines(), start=1):
            for match in pattern.finditer(line):
                given = match.group(1) or f"configs/{match.group(2)}.yaml"
                if _placeholder(given) or ("/" in given and not given.startswith("configs/")):
                    continue  # a placeholder, or the reader's own file
                if given.startswith("configs/") or not given.endswith((".yaml", ".yml")):
                    count += 1
                    name = Path(given).stem
                    if name not in names:
                        problems.append(f"{path.relative_to(root)}:{number}: preset {given!r} "
                                        f"is not shipped (presets: {', '.join(sorted(names))})")
    return count, problems


def link_problems(root: Path) -> list[str]:
    """README.md's relative links whose file is missing (the site's own links are checked
    by ``mkdocs build --strict``)."""
    text = (root / "README.md").read_text("utf-8")
    links = re.findall(r"\]\(([^)\s#]+)(?:#[^)]*)?\)", text)
    return [f"README.md links to {link!r}, which does not exist" for link in links
            if not re.match(r"^[a-z]+:", link) and not (root / link).exists()]


def mkdocs_build(root: Path, site: Path) -> subprocess.CompletedProcess:
    """``mkdocs build --strict`` of ``root``'s site into ``site``, with this Python's mkdocs."""
    mkdocs = Path(sys.executable).parent / "mkdocs"
    assert mkdocs.exists(), f"{mkdocs} is missing: make install installs the .[docs] extra"
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", DISABLE_MKDOCS_2_WARNING="true")
    return subprocess.run([str(mkdocs), "build", "--strict", "-f", str(root / "mkdocs.yml"),
                           "-d", str(site)], cwd=root, env=env, capture_output=True, text=True,
                          timeout=300)
