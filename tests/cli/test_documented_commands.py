"""Every ``rankmixer ...`` command in README.md and docs/*.md exists as written.

Each command in a fenced code block (shell blocks; ``text``/``yaml``/``json``/``python`` blocks
are output or files, not commands) is parsed by the real command-line parser: the command path,
every option name, the types of the values and the required options. Cheap ones then run for
real in a scratch directory: ``models``, ``data presets``; ``train`` and the ``bench`` commands
that take experiments, suites or specs run with the expensive library call replaced by a stand-in
that validates what it was given (every named experiment, suite cell and scaling size resolves
to a valid config), so the test takes seconds. Commands quoted inline (``rankmixer x --y``) and
``console`` blocks (a session with the user's own files) may hold placeholders, so only their
command path and option names are checked.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from rankmixer.cli import app

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NOT_SHELL = {"text", "yaml", "yml", "json", "python", "toml", "console-output"}
# Blocks that show a session with the user's own files (commands followed by what they print):
# their commands are checked like inline ones, path and option names only.
TRANSCRIPTS = {"console"}
SEPARATORS = {";", "&&", "||", "|", "&"}
TREE = get_command(app)


# ---- finding the commands ---------------------------------------------------------------------
def _rankmixer_args(tokens: list[str]) -> list[str] | None:
    """The arguments after ``rankmixer`` (plain, after ``VAR=x``, ``time`` or ``do``, or after
    ``-m rankmixer`` under python/torchrun), or None when the command is not ours."""
    i = 0
    while i < len(tokens) and (tokens[i] in ("do", "then", "else", "time") or re.fullmatch(r"[A-Za-z_]\w*=.*", tokens[i])):
        i += 1
    if i < len(tokens) and tokens[i] == "rankmixer":
        return tokens[i + 1:]
    for j in range(len(tokens) - 1):
        if tokens[j] == "-m" and tokens[j + 1] == "rankmixer":
            return tokens[j + 2:]
    return None


def shell_commands(line: str) -> list[list[str]]:
    """The rankmixer commands of one shell line (comments dropped, split at ``;``, ``&&``...)."""
    lex = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lex.whitespace_split = True
    lex.commenters = "#"
    commands, current = [], []
    for tok in [*lex, ";"]:
        if tok in SEPARATORS:
            args = _rankmixer_args(current)
            if args is not None:
                commands.append(args)
            current = []
        else:
            current.append(tok)
    return commands


def documented(text: str) -> tuple[list[tuple[int, list[str]]], list[tuple[int, list[str]]]]:
    """(fenced commands, inline commands) of a Markdown text as (line number, arguments)."""
    fenced, inline = [], []
    lines = text.split("\n")
    lang = None  # None: outside a fence
    i = 0
    while i < len(lines):
        line, start = lines[i], i + 1
        fence = re.match(r"\s*```\s*([\w-]*)", line)
        if fence:
            lang = None if lang is not None else fence.group(1).lower()
        elif lang is not None:
            while line.rstrip().endswith("\\") and i + 1 < len(lines):  # continuation lines
                i += 1
                line = line.rstrip()[:-1] + " " + lines[i].strip()
            if lang not in NOT_SHELL and re.search(r"(^|\s)rankmixer(\s|$)", line):
                found = [(start, args) for args in shell_commands(line)]
                if lang in TRANSCRIPTS:  # a session with the user's own files: names, not runs
                    inline += found
                else:
                    fenced += found
        else:
            for span in re.findall(r"`([^`\n]+)`", line):
                words = span.split()
                if words and words[0] == "time":
                    words = words[1:]
                if len(words) > 1 and words[0] == "rankmixer":
                    inline.append((start, words[1:]))
        i += 1
    return fenced, inline


def _collect():
    fenced, inline = [], []
    for doc in DOCS:
        f, n = documented(doc.read_text())
        name = doc.relative_to(ROOT)
        fenced += [pytest.param(args, id=f"{name}:{line}") for line, args in f]
        inline += [pytest.param(args, id=f"{name}:{line}") for line, args in n]
    return fenced, inline


FENCED, INLINE = _collect()


# ---- checking one command ---------------------------------------------------------------------
def resolve(args: list[str]):
    """(command object, command path, remaining arguments); AssertionError for a command path
    that does not exist. Stops at a group followed by an option (``rankmixer bench --help``)."""
    cmd, path = TREE, []
    while hasattr(cmd, "commands") and args and not args[0].startswith("-"):
        if args[0] not in cmd.commands:
            raise AssertionError(f"'rankmixer {' '.join([*path, args[0]])}' is not a command "
                                 f"(rankmixer {' '.join(path)} has: {', '.join(cmd.commands)})")
        cmd, path, args = cmd.commands[args[0]], [*path, args[0]], args[1:]
    assert path, "'rankmixer' without a command"
    return cmd, path, args


def option_names(cmd) -> set[str]:
    return {o for p in cmd.params for o in (*p.opts, *p.secondary_opts) if o.startswith("-")} | {"--help"}


def check_inline(args: list[str]) -> None:
    cmd, path, rest = resolve(args)
    for tok in rest:
        name = tok.strip("[]").split("=")[0]
        if name.startswith("-") and name not in ("-", "--", "..."):
            assert name in option_names(cmd), f"rankmixer {' '.join(path)} has no option {name}"


def parse(cmd, path: list[str], args: list[str]) -> dict:
    """The parsed parameters, as the real parser reads them (types, required options)."""
    try:
        return cmd.make_context("rankmixer " + " ".join(path), list(args)).params
    except Exception as e:  # the parser's UsageError / BadParameter / NoSuchOption
        raise AssertionError(f"rankmixer {' '.join(path + args)}: {e}") from None


def test_docs_hold_commands():
    """The extraction finds the commands (a guard against a parser that silently finds none)."""
    paths = {" ".join(resolve(p.values[0])[1]) for p in FENCED}
    assert len(FENCED) > 40 and {"train", "bench accuracy", "bench scaling", "models", "export"} <= paths


@pytest.mark.parametrize("args", INLINE)
def test_inline_command(args):
    check_inline(args)


@pytest.mark.parametrize("args", FENCED)
def test_documented_command(args, tmp_path, monkeypatch):
    args = [a for a in args if a != "..."]  # '...' elides arguments in the docs
    cmd, path, rest = resolve(args)
    params = parse(cmd, path, rest)
    res = CliRunner().invoke(app, [*path, "--help"])
    assert res.exit_code == 0, res.output
    if any("$" in a for a in args):  # shell variables: parsing is all a test can do
        return
    check = CHECKS.get(tuple(path))
    if check is not None:
        monkeypatch.chdir(tmp_path)
        check(path, rest, params, monkeypatch)


# ---- real runs of the cheap ones ---------------------------------------------------------------
def _invoke(path: list[str], rest: list[str]) -> str:
    res = CliRunner().invoke(app, [*path, *rest], terminal_width=200)
    assert res.exit_code == 0, res.output
    return res.output


def _run_models(path, rest, params, monkeypatch):
    from rankmixer.core.yamlio import parse_key_values
    from rankmixer.models import registry

    if params["describe"] is None:
        _invoke(path, rest)
    else:  # the named model and options exist (describing it needs a feature map or time)
        registry.parse_config(params["describe"], parse_key_values(params["option"], "--option"))


def _run_presets(path, rest, params, monkeypatch):
    assert "movielens-latest" in _invoke(path, rest)


def _check_prepare(path, rest, params, monkeypatch):
    from rankmixer.data.datasets.base import get_preset

    if params["dataset"]:
        get_preset(params["dataset"])


def _check_speed(path, rest, params, monkeypatch):
    from rankmixer.config import apply_overrides
    from rankmixer.models import registry

    registry.parse_config(params["model"], apply_overrides({}, list(params["set_"])))


def _run_train(path, rest, params, monkeypatch):
    from rankmixer import experiment
    from rankmixer.config import ExperimentConfig

    seen = []

    def train(cfg, resume=False, log=print, overwrite=False):
        assert isinstance(cfg, ExperimentConfig)
        seen.append(cfg)
        return {"best_step": 0, "valid": {}, "test": {}}

    monkeypatch.setattr(experiment, "train", train)
    _invoke(path, rest)
    assert len(seen) == 1


def _validate_cells(cells, overrides, budget) -> None:
    from rankmixer.bench.accuracy import budget_overrides
    from rankmixer.config import load_config

    assert cells
    budget_overrides(budget, 1024)
    for c in cells:
        load_config(c.config, [*c.overrides, *overrides])


def _run_accuracy(path, rest, params, monkeypatch):
    from rankmixer.bench import accuracy

    seen = []

    def run_accuracy(cells, seeds, out, overrides, log=print, name="accuracy", budget=None, differences=(),
                     processes=1, report_only=False):
        _validate_cells(cells, overrides, budget)
        seen.append(len(cells))
        return {"summary": []}

    monkeypatch.setattr(accuracy, "run_accuracy", run_accuracy)
    _invoke(path, rest)
    assert seen


def _run_scaling(path, rest, params, monkeypatch):
    from rankmixer.bench import scaling

    def run_scaling(spec, seeds, out, overrides=None, log=print, budget=None, families=None, processes=1,
                    report_only=False, earlier=None):
        cells, spec_budget = scaling.load_spec(spec)
        if families:
            cells = scaling.pick_families(cells, families)
        _validate_cells(cells, overrides or [], budget or spec_budget)
        out.mkdir(parents=True, exist_ok=True)
        (out / "scaling.md").write_text("")

    monkeypatch.setattr(scaling, "run_scaling", run_scaling)
    _invoke(path, rest)


def _check_distributed(path, rest, params, monkeypatch):
    from rankmixer.config import load_config

    load_config(params["config"], list(params["overrides"] or []))


def _check_tune(path, rest, params, monkeypatch):
    from rankmixer.tune import load_space

    load_space(params["space"]).check_against(params["config"], list(params["overrides"] or []))


CHECKS = {
    ("models",): _run_models,
    ("data", "presets"): _run_presets,
    ("data", "prepare"): _check_prepare,
    ("bench", "speed"): _check_speed,
    ("train",): _run_train,
    ("bench", "accuracy"): _run_accuracy,
    ("bench", "scaling"): _run_scaling,
    ("bench", "distributed"): _check_distributed,
    ("tune",): _check_tune,
}


# ---- the checks can fail --------------------------------------------------------------------------
def test_a_wrong_command_or_option_fails():
    doc = "```bash\nrankmixer trian -c movielens_dcnv2\nrankmixer train -c movielens_dcnv2 --epochs 3\n```\n" \
          "Then `rankmixer bench acuracy --suite peers`, and output:\n```text\nrankmixer FAILED\n```\n"
    fenced, inline = documented(doc)
    assert [line for line, _ in fenced] == [2, 3] and len(inline) == 1
    with pytest.raises(AssertionError, match="trian"):
        resolve(fenced[0][1])
    cmd, path, rest = resolve(fenced[1][1])
    with pytest.raises(AssertionError, match="--epochs"):
        parse(cmd, path, rest)
    with pytest.raises(AssertionError, match="acuracy"):
        check_inline(inline[0][1])
    with pytest.raises(AssertionError, match="--nope"):
        check_inline(["train", "--nope"])


def test_shell_lines_split_into_commands():
    assert shell_commands("pip install -e . && rankmixer quickstart  # then") == [["quickstart"]]
    assert shell_commands("OMP_NUM_THREADS=1 torchrun --nproc_per_node=2 -m rankmixer train -c x a=1") == \
        [["train", "-c", "x", "a=1"]]
    assert shell_commands("for S in 0 1; do rankmixer models; done") == [["models"]]
    assert shell_commands("rankmixer train -c x 'model={name: lr}'") == [["train", "-c", "x", "model={name: lr}"]]
