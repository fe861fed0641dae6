"""Docs that cannot go stale silently (issue 30): the site builds with ``mkdocs build
--strict`` (broken links, missing pages and a failing reference generator fail); every
``simsiam ...`` command shown in README.md and docs/ is accepted by the real parser; every
config key named there exists in the schema; every preset named there is shipped; the
generated references cover every key and every flag. The checks are in
:mod:`tests.docs_checks`.
"""

from __future__ import annotations

from pathlib import Path

from simsiam.cli.parser import build_parser
from simsiam.config.load import config_keys

from .conftest import load_script
from .docs_checks import (
    command_args,
    command_problems,
    key_problems,
    link_problems,
    mkdocs_build,
    parse_error,
    preset_problems,
    subparsers,
)

ROOT = Path(__file__).resolve().parent.parent


def _gen_reference():
    return load_script("gen_reference", ROOT / "docs/gen_reference.py")


def test_site_builds_strict(tmp_path):
    result = mkdocs_build(ROOT, tmp_path / "site")
    assert result.returncode == 0, result.stdout + result.stderr
    config = (tmp_path / "site/reference/config/index.html").read_text("utf-8")
    commands = (tmp_path / "site/reference/commands/index.html").read_text("utf-8")
    assert "model.simsiam.dim" in config and "train.batch_size" in config
    assert "--stop-after-epoch" in commands and "simsiam reproduce" in commands


def test_config_reference_has_every_key_with_its_default():
    page = _gen_reference().config_reference()
    sections = {k.rpartition(".")[0] for k in config_keys()}
    missing = [k for k in config_keys() if k not in sections and f"| `{k}` |" not in page]
    assert not missing, f"keys missing from the configuration reference: {missing}"
    assert "| `model.simsiam.dim` | `int` | `2048` |" in page
    assert "| `train.batch_size` | `int` | `512` |" in page
    assert "| `data.image_size` | `int` | `224` | cifar10: `32`" in page


def test_command_reference_has_every_subcommand_and_flag():
    page = _gen_reference().commands_reference()
    for name, sub in subparsers(build_parser()).items():
        assert f"## simsiam {name}\n" in page
        flags = [s for a in sub._actions for s in a.option_strings if s not in ("-h", "--help")]
        missing = [f for f in flags if f"`{f}`" not in page]
        assert not missing, f"{name}: flags missing from the command reference: {missing}"


def test_docs_commands_parse():
    count, problems = command_problems(ROOT)
    assert count >= 10, f"only {count} simsiam commands found in README.md and docs/"
    assert not problems, "\n".join(problems)


def test_docs_config_keys_exist():
    count, problems = key_problems(ROOT)
    assert count >= 5, f"only {count} config keys found in README.md and docs/"
    assert not problems, "\n".join(problems)


def test_docs_presets_exist():
    count, problems = preset_problems(ROOT)
    assert count >= 3, f"only {count} presets named in README.md and docs/"
    assert not problems, "\n".join(problems)


def test_readme_links_exist():
    assert not link_problems(ROOT), "\n".join(link_problems(ROOT))


def test_checks_catch_stale_docs(tmp_path):
    """The checks fail on what they are for: a renamed flag, an unknown subcommand, a
    misspelt key, a preset that is not shipped."""
    parser = build_parser()
    assert parse_error(parser, ["pretrain", "--config", "cifar10", "--epoch", "5"], True)
    assert parse_error(parser, ["pretrian", "--config", "cifar10"], True)
    assert parse_error(parser, ["pretrain", "--epochs", "5"], True)  # --config is required
    assert not parse_error(parser, ["pretrain", "--epochs", "5"], False)
    assert not parse_error(parser, ["knn", "--checkpoint", "<run>", "--k", "K"], False)
    assert not parse_error(parser, ["report", "RUN"], True)
    assert parse_error(parser, ["knn", "RUN"], False)  # knn takes no positional
    assert parse_error(parser, ["knn", "--checkpoint", "x", "--k", "0"], False)  # out of range
    assert not parse_error(parser, ["COMMAND", "--help"], True)
    assert parse_error(parser, ["COMMAND", "--no-such-flag"], True)
    assert parse_error(parser, ["pretrain", "--epoch", "5"], False)  # not hidden by --config
    assert not parse_error(parser, ["demo", "--stop-after-epoch"], False)
    assert parse_error(parser, ["demo", "--stop-after-epoch"], True)
    assert command_args("torchrun --nproc_per_node 8 -m simsiam pretrain --config x") == \
        [["pretrain", "--config", "x"]]
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text(
        "Run `simsiam pretrain --config cifar10 --set optim.base_rate=0.1`\n\n```bash\n"
        "simsiam demo \\\n  --epoch 3\n```\nSee `train.batchsize` and configs/tiny.yaml.\n")
    assert command_problems(tmp_path)[1] == [
        "README.md:4: `simsiam demo --epoch 3`: simsiam demo: error: unrecognized arguments: "
        "--epoch 3 (did you mean --epochs?)"]
    assert [p.split(": ")[1] for p in key_problems(tmp_path)[1]] == [
        "optim.base_rate is not a config key", "train.batchsize is not a config key"]
    assert preset_problems(tmp_path)[0] == 2 and len(preset_problems(tmp_path)[1]) == 1
