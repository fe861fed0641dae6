"""The docs site's generated pages (issue 30): ``reference/config.md`` from the config schema
and ``reference/commands.md`` from the real argparse parser, written at build time by the
mkdocs-gen-files plugin (``mkdocs.yml``), never by hand.

:func:`config_reference` and :func:`commands_reference` return the pages' markdown, so the
tests (``tests/test_docs.py``) can call them without building the site. Only the public API
is read: the schema's dataclasses (:class:`simsiam.config.Config` and its sections, their
docstrings and field comments), :data:`simsiam.methods.CARDS`, the shipped presets
(:func:`simsiam.config.preset_names`, :data:`simsiam.config.PRESET_DIR`) and
:func:`simsiam.cli.parser.build_parser` (whose subcommands argparse keeps in its actions).

Run directly (``python docs/gen_reference.py OUT``) it writes both pages under ``OUT``.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import io
import os
import re
import sys
import tokenize
import typing
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "src") not in sys.path:  # document the tree being built, installed or not
    sys.path.insert(0, str(ROOT / "src"))

import yaml  # noqa: E402

from simsiam.cli.parser import build_parser  # noqa: E402
from simsiam.config import PRESET_DIR, Config, preset_names  # noqa: E402
from simsiam.methods.settings import CARDS  # noqa: E402

__all__ = ["commands_reference", "config_reference", "config_rows", "write_pages"]

GENERATED = ("*Generated at build time by `docs/gen_reference.py` from {what}; "
             "edit the source, not this page.*")
USAGE_COLUMNS = "100"  # the width argparse wraps the usage lines at


def rst_to_md(text: str) -> str:
    """Docstring text (reST roles, double backticks) as one line of markdown."""
    text = re.sub(r":[a-z]+:`~?([^`]+)`", lambda m: f"`{m.group(1).split('.')[-1]}`"
                  if m.group(0).count("~") else f"`{m.group(1)}`", text)
    text = text.replace("``", "`")
    return " ".join(text.split())


def field_comments(cls: type) -> dict[str, str]:
    """Each field of dataclass ``cls`` -> its source comments: the block of ``#`` lines
    just above the field, then the comment at the end of its line ("" when none)."""
    source = inspect.getsource(cls)
    comments: dict[str, str] = {}
    block: list[str] = []
    lines = source.splitlines()
    toks = tokenize.generate_tokens(io.StringIO(source).readline)
    line_comment = {t.start[0]: t.string.lstrip("#").strip()
                    for t in toks if t.type == tokenize.COMMENT}
    names = {f.name for f in dataclasses.fields(cls)}
    group = ""  # the field whose block comment speaks for the uncommented fields after it
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if stripped.startswith("#"):
            block.append(line_comment.get(number, ""))
            continue
        match = re.match(r"(\w+)\s*:", stripped)
        if match and match.group(1) in names:
            parts = block + ([line_comment[number]] if number in line_comment else [])
            text = " ".join(p for p in parts if p)
            group = match.group(1) if block else group if not text else ""
            comments[match.group(1)] = text or (f"see `{group}` above" if group else "")
        block = []
    return comments


def _value(value: Any) -> str:
    """A default as it is written in YAML (``null``, ``true``, ``0.1``, ``'auto'``)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def _type_name(hint: Any) -> str:
    """``int``, ``str | None``, ``list[float]``: the annotation as written."""
    if isinstance(hint, type) and not typing.get_args(hint):
        return hint.__name__
    return str(hint).replace("typing.", "").replace("NoneType", "None")


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def config_rows(cls: type = Config, prefix: str = "") -> list[dict[str, Any]]:
    """Every key under dataclass ``cls`` (default: the whole run's :class:`Config`), depth
    first: ``{"key", "type", "default", "description", "section", "owner"}``; a field that is
    itself a dataclass is a section row (``section: True``) followed by its keys."""
    rows = []
    hints = typing.get_type_hints(cls)
    comments = field_comments(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            rows.append({"key": key, "section": True, "owner": hint,
                         "description": rst_to_md(inspect.getdoc(hint) or "")})
            rows.extend(config_rows(hint, f"{key}."))
            continue
        rows.append({"key": key, "section": False, "owner": cls, "type": _type_name(hint),
                     "default": _default(f), "description": rst_to_md(comments.get(f.name, ""))})
    return rows


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix.rstrip("."): tree}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(_flat(v, f"{prefix}{k}."))
    return out


def preset_values() -> dict[str, dict[str, Any]]:
    """Each shipped preset's name -> ``{dotted key: value}`` it sets."""
    return {name: _flat(yaml.safe_load((PRESET_DIR / f"{name}.yaml").read_text("utf-8")) or {})
            for name in preset_names()}


def _preset_summary(name: str) -> str:
    """The first sentence of a preset's header comment."""
    lines = []
    for line in (PRESET_DIR / f"{name}.yaml").read_text("utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("# ").rstrip())
    text = " ".join(lines)
    return text.split(". ")[0].rstrip(".") + "." if text else ""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _settings_text(values: dict[str, Any]) -> str:
    return ", ".join(f"`{k}` = `{_value(v)}`" for k, v in values.items())


def _card_lines(method: str) -> list[str]:
    """What the method's card says: its views, its batches, its authors' other settings."""
    card = CARDS[method]
    lines = [f"Used when `method: {method}` (`--method {method}`). Views: the "
             f"`{card.view_recipe}` recipe (`augment.recipe: auto`); a batch is "
             f"{card.batch_kind}.", ""]
    small, large = card.published_optim(32), card.published_optim(224)
    optim = _settings_text(small) if small == large else \
        f"at 32 px {_settings_text(small) or 'none'}; at 224 px {_settings_text(large) or 'none'}"
    if card.published or small or large:
        lines += ["Its authors' settings of other sections, applied when `--method` switches a "
                  "preset to it: " + "; ".join(t for t in (_settings_text(card.published),
                                                          optim) if t) + ".", ""]
    return lines


def config_reference() -> str:
    """The configuration reference page: every key of :class:`Config`, with type, default,
    the presets that set it and the description from the schema's source."""
    presets = preset_values()
    out = ["# Configuration reference", "", GENERATED.format(
        what="the config schema (`simsiam.config.Config` and its sections)"), "",
        "Every setting of a run is one of the keys below. A run's value comes from, later "
        "winning: the default here, the YAML preset (`--config NAME` or a file), the settings "
        "a method's authors used (only when `--method` switches the preset's method), then "
        "`--set KEY=VALUE` and the command's flags. Only the section of the run's `method` "
        "(`model.<method>.*`) is used.", "", "## Presets", "",
        "| Preset | What it is |", "|---|---|"]
    out += [f"| `{n}` (`configs/{n}.yaml`) | {_cell(_preset_summary(n))} |" for n in presets]
    for row in config_rows():
        if row["section"] or row["key"] == "method":
            out += _section_head(row)
        if row["section"]:
            continue
        sets = [f"{n}: `{_value(v[row['key']])}`" for n, v in presets.items() if row["key"] in v]
        out.append(f"| `{row['key']}` | `{_cell(row['type'])}` | `{_cell(_value(row['default']))}`"
                   f" | {_cell(', '.join(sets)) or '-'} | {_cell(row['description'])} |")
    return "\n".join(out) + "\n"


def _section_head(row: dict[str, Any]) -> list[str]:
    """The heading, description and table head of a section (``method``: the top level)."""
    if row["key"] == "method":
        head = ["", "## `method`", "", f"The method trained: one of {', '.join(CARDS)}.", ""]
    else:
        owner = row["owner"]
        head = ["", f"## `{row['key']}`", "", f"`{owner.__module__}.{owner.__qualname__}`", "",
                row["description"], ""]
        method = row["key"].removeprefix("model.")
        if method in CARDS:
            head += _card_lines(method)
    return head + ["| Key | Type | Default | Set by presets | Description |",
                   "|---|---|---|---|---|"]


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, Any]]:
    """``(name, help, parser)`` of each subcommand, in the order they were added."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            return [(n, helps.get(n, ""), p) for n, p in action.choices.items()]
    return []


def _flag_row(action: argparse.Action) -> str:
    names = ", ".join(f"`{s}`" for s in action.option_strings) or \
        f"`{action.metavar or action.dest}`"
    if action.choices is not None and not isinstance(action, argparse._SubParsersAction):
        value = " \\| ".join(f"`{c}`" for c in action.choices)
    elif action.nargs == 0:
        value = "(switch)"
    else:
        value = f"`{action.metavar or action.dest.upper()}`"
    default = action.default
    shown = "-" if default in (None, False, argparse.SUPPRESS) or action.nargs == 0 else \
        f"`{default}`"
    required = "yes" if action.required or not action.option_strings else ""
    text = action.help or ""
    if "%" in text:  # argparse formats every help string: %% is %, %(default)s the default
        text = text % dict(vars(action), prog="simsiam")
    key = getattr(action.type, "key", "")  # a Bounded flag names the config key it sets
    if key:
        text = f"{text} (sets `{key}`)" if text else f"sets `{key}`"
    return f"| {names} | {value} | {shown} | {required} | {_cell(text)} |"


def _usage(parser: argparse.ArgumentParser) -> str:
    before = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = USAGE_COLUMNS
    try:
        return parser.format_usage().strip()
    finally:
        if before is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = before


def commands_reference() -> str:
    """The command reference page: ``simsiam``'s usage and each subcommand's usage, help and
    every argument (value, default, required, help), read from the real parser."""
    parser = build_parser()
    subs = _subcommands(parser)
    out = ["# Command reference", "", GENERATED.format(
        what="the real argparse parser (`simsiam.cli.parser.build_parser`)"), "",
        "```text", _usage(parser), "```", "", rst_to_md(parser.description or ""), "",
        "| Command | What it does |", "|---|---|"]
    out += [f"| [`{n}`](#simsiam-{n}) | {_cell(h)} |" for n, h, _ in subs]
    for name, help_text, sub in subs:
        out += ["", f"## simsiam {name}", "", _cell(help_text)]
        if sub.description:
            out += ["", rst_to_md(sub.description)]
        out += ["", "```text", _usage(sub), "```", "",
                "| Argument | Value | Default | Required | Help |", "|---|---|---|---|---|"]
        out += [_flag_row(a) for a in sub._actions if not isinstance(a, argparse._HelpAction)]
    return "\n".join(out) + "\n"


def write_pages(open_file: Any) -> None:
    """Write ``reference/config.md`` and ``reference/commands.md`` through ``open_file(path,
    mode)`` (``mkdocs_gen_files.open`` at build time)."""
    for path, text in (("reference/config.md", config_reference()),
                       ("reference/commands.md", commands_reference())):
        with open_file(path, "w") as f:
            f.write(text)


if __name__ == "<run_path>":  # run by the mkdocs-gen-files plugin
    import mkdocs_gen_files

    write_pages(mkdocs_gen_files.open)
elif __name__ == "__main__":
    out_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "site-reference")

    def _open(path: str, mode: str) -> Any:
        (out_dir / path).parent.mkdir(parents=True, exist_ok=True)
        return open(out_dir / path, mode, encoding="utf-8")

    write_pages(_open)
