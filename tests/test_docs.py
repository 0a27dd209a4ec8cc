"""The documentation stays true to the code: commands, flags, make targets, the layout and the links.

Where commands are read (README.md and docs/*.md):

- A *command line* is a line of a fenced (```) or indented (4 spaces) code block, joined with its
  backslash continuations and cut at its ``#`` comment, or one inline code span (`...`) of prose.
  It is split into segments at ``&&``, ``||``, ``|`` and ``;``.
- ``edge SUB`` (the word ``edge`` on its own, optionally ``-v``, then a lower-case word) names a
  subcommand, which must be one of ``edge.cli.COMMANDS``. Every ``--flag`` after it in the segment,
  up to the next ``edge SUB``, must be an option of SUB's parser, as ``edge.cli.build_parser``
  builds it. Placeholders (``edge CMD``, ``edge <subcommand>``) are not commands.
- ``python -m MODULE`` (a module of edge, train, bench or calibration) must resolve
  (``importlib.util.find_spec``); its flags must be options of the module's ``build_parser()`` where
  it has one, else string literals of the ``add_argument("--...")`` calls in its source. A span
  that starts with a bench script's bare name (`quantize_benchmark --peers`) is read as
  ``python -m bench.scripts.<name>``. Upper-case names (``bench.scripts.NAME``) are placeholders.
- ``make WORD ...``: every word after ``make`` that is not ``VAR=value`` or an option is a target
  of the Makefile.
- Flags named in prose: a paragraph (lines between blank lines; each list item, heading and table
  row is its own) whose inline code names exactly one program, one ``edge SUB`` or one
  ``python -m`` module, is about that program: every inline span made only of flags (`--rounds`,
  `--max-drop 0.5`) must be an option of it. A list item that names no program is about the
  program of the paragraph that leads into its list (one ending in ':'). A paragraph that names
  two programs, or none, is ambiguous, and its bare flags are not checked.

The Layout section of docs/architecture.md names every package of the tree (each directory under
edge/, train/, bench/, calibration/ that holds an ``__init__.py``, as a dotted name or a path) and
no module or package that does not exist. Every ``*.py`` path written in the docs exists. README.md
has at most 220 lines and links every docs page; every relative link of the docs resolves, to a
heading where it names one (GitHub's anchors).
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_ROOTS = ("edge", "train", "bench", "calibration")
README_MAX_LINES = 220

EDGE_COMMAND = re.compile(r"(?:(?<![\w./$-])|(?<=bin/))edge(?:\s+(?:-v|--verbose))?\s+([a-z][a-z0-9-]*)\b(?![./])")
PYTHON_MODULE = re.compile(r"\bpython3?\s+-m\s+([A-Za-z_][\w.]*)")
MAKE = re.compile(r"(?<![\w./$-])make((?:\s+[^\s&|;]+)*)")
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
SEPARATORS = re.compile(r"&&|\|\||[|;]")
INLINE_CODE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


# ---- reading the markdown ------------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    """One command line (a code-block line or an inline span) and where it is."""

    text: str
    where: str


def split_markdown(path: Path) -> tuple[list[Line], list[list[Line]]]:
    """(code-block command lines, prose paragraphs as lists of their lines)."""
    code: list[Line] = []
    paragraphs: list[list[Line]] = [[]]
    fenced = False
    pending = ""
    lines = path.read_text().splitlines()
    for number, raw in enumerate(lines, 1):
        where = f"{path.relative_to(ROOT)}:{number}"
        if raw.lstrip().startswith("```"):
            fenced = not fenced
            paragraphs.append([])
            continue
        indented = raw.startswith("    ") and not raw.lstrip().startswith(("-", "*", "|")) and not paragraphs[-1]
        if fenced or (indented and raw.strip()):
            text = pending + raw.split(" #")[0] if not raw.lstrip().startswith("#") else pending
            if text.rstrip().endswith("\\"):
                pending = text.rstrip()[:-1] + " "
                continue
            pending = ""
            code.append(Line(text, where))
            continue
        if not raw.strip():
            paragraphs.append([])
            continue
        if re.match(r"\s*(?:[-*]|\d+\.)\s|#|\|", raw):
            paragraphs.append([])
        paragraphs[-1].append(Line(raw, where))
    return code, [p for p in paragraphs if p]


def inline_spans(paragraph: list[Line]) -> list[Line]:
    spans = []
    text = " ".join(line.text for line in paragraph)
    for match in INLINE_CODE.finditer(text):
        spans.append(Line(match.group(1), paragraph[0].where))
    return spans


def command_lines() -> list[Line]:
    lines = []
    for path in doc_files():
        code, paragraphs = split_markdown(path)
        lines += code
        for paragraph in paragraphs:
            lines += inline_spans(paragraph)
    return lines


# ---- what the code offers ------------------------------------------------------------------------


@cache
def edge_options() -> dict[str, set[str]]:
    """Subcommand -> its option strings, from the CLI's own parser (nothing is run)."""
    from edge.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {name: {o for a in p._actions for o in a.option_strings} for name, p in sub.choices.items()}


@cache
def module_options(module: str) -> set[str] | None:
    """A project module's option strings: its build_parser() where it has one, else the literal
    ``add_argument("--...")`` strings of its source; None when it declares none."""
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None
    source = Path(spec.origin).read_text()
    if re.search(r"^def build_parser\(", source, re.M):
        parser = importlib.import_module(module).build_parser()
        return {o for a in parser._actions for o in a.option_strings}
    options = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
            options |= {a.value for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("-")}
    return options or None


@cache
def make_targets() -> set[str]:
    targets = set()
    for line in (ROOT / "Makefile").read_text().splitlines():
        match = re.match(r"([A-Za-z0-9_.-]+(?:\s+[A-Za-z0-9_.-]+)*)\s*:(?!=)", line)
        if match and not line.startswith(("\t", ".")):
            targets.update(match.group(1).split())
    return targets


def bench_scripts() -> set[str]:
    return {p.stem for p in (ROOT / "bench" / "scripts").glob("*.py") if p.stem != "__init__"}


def project_module(name: str) -> bool:
    """A module of this project, not a placeholder such as ``bench.scripts.NAME``."""
    return name.split(".")[0] in PACKAGE_ROOTS and name == name.lower()


# ---- the commands --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Program:
    """What a segment runs: ``edge SUB`` or ``python -m MODULE``, with the flags written after it."""

    kind: str  # "edge" or "module"
    name: str
    flags: tuple[str, ...]


def programs(text: str) -> list[Program]:
    """The edge subcommands and project modules a command line runs, each with its flags."""
    if text.split() and text.split()[0] in bench_scripts():
        text = "python -m bench.scripts." + text.strip()
    found = []
    for segment in SEPARATORS.split(text):
        starts = [(m.start(), "edge", m.group(1), m.end()) for m in EDGE_COMMAND.finditer(segment)]
        starts += [
            (m.start(), "module", m.group(1), m.end()) for m in PYTHON_MODULE.finditer(segment) if project_module(m.group(1))
        ]
        starts.sort()
        for i, (_, kind, name, end) in enumerate(starts):
            stop = starts[i + 1][0] if i + 1 < len(starts) else len(segment)
            found.append(Program(kind, name, tuple(f.split("=")[0] for f in FLAG.findall(segment[end:stop]))))
    return found


def problems_of(program: Program) -> list[str]:
    if program.kind == "edge":
        options = edge_options().get(program.name)
        if options is None:
            return [f"`edge {program.name}` is not a subcommand (edge.cli.COMMANDS)"]
        return [f"`edge {program.name}` has no option {flag}" for flag in program.flags if flag not in options]
    if importlib.util.find_spec(program.name) is None:
        return [f"`python -m {program.name}`: no such module"]
    module_flags = module_options(program.name)
    if module_flags is None:
        return []
    return [f"`python -m {program.name}` has no option {flag}" for flag in program.flags if flag not in module_flags]


def test_the_docs_name_real_commands() -> None:
    lines = command_lines()
    assert sum(bool(programs(line.text)) for line in lines) > 50, "the parser found too few commands: is it broken?"
    problems = [f"{line.where}: {p}" for line in lines for program in programs(line.text) for p in problems_of(program)]
    assert not problems, "\n".join(problems)


def is_list_item(paragraph: list[Line]) -> bool:
    return bool(re.match(r"\s*(?:[-*]|\d+\.)\s", paragraph[0].text))


def test_flags_named_in_prose_belong_to_the_paragraphs_command() -> None:
    problems, checked = [], 0
    for path in doc_files():
        lead: set[tuple[str, str]] = set()  # what a lead-in paragraph ending in ':' names, for its list
        for paragraph in split_markdown(path)[1]:
            spans = inline_spans(paragraph)
            named = {(p.kind, p.name) for span in spans for p in programs(span.text)}
            if not is_list_item(paragraph):
                lead = named if paragraph[-1].text.rstrip().endswith(":") else set()
            elif not named:
                named = lead
            if len(named) != 1:
                continue
            (kind, name), bare = next(iter(named)), [s for s in spans if s.text.startswith("--")]
            for span in bare:
                checked += 1
                program = Program(kind, name, tuple(f.split("=")[0] for f in FLAG.findall(span.text)))
                problems += [f"{span.where}: {p} (named in prose)" for p in problems_of(program)]
    assert checked > 50, f"only {checked} flags in prose were checked: is the paragraph rule broken?"
    assert not problems, "\n".join(problems)


def test_make_commands_name_real_targets() -> None:
    problems, checked = [], 0
    for line in command_lines():
        for segment in SEPARATORS.split(line.text):
            for match in MAKE.finditer(segment):
                words = [w for w in match.group(1).split() if "=" not in w and not w.startswith("-")]
                words = [w.strip(".,:'\"()") for w in words if re.fullmatch(r"[a-z][a-z0-9-]*[.,:]?", w)]
                checked += len(words)
                problems += [
                    f"{line.where}: `make {w}`: no such target in the Makefile" for w in words if w not in make_targets()
                ]
    assert checked > 10
    assert not problems, "\n".join(problems)


# ---- the layout ----------------------------------------------------------------------------------


def packages_in_tree() -> set[str]:
    found = set()
    for root in PACKAGE_ROOTS:
        for init in (ROOT / root).rglob("__init__.py"):
            found.add(".".join(init.parent.relative_to(ROOT).parts))
    return found


def layout_section() -> str:
    lines = (ROOT / "docs" / "architecture.md").read_text().splitlines()
    start = next((i for i, line in enumerate(lines) if re.match(r"#+ .*\bLayout\b", line)), None)
    assert start is not None, "docs/architecture.md has no Layout section"
    level = len(lines[start]) - len(lines[start].lstrip("#"))
    end = next((j for j in range(start + 1, len(lines)) if re.match(rf"#{{1,{level}}} ", lines[j])), len(lines))
    return "\n".join(lines[start:end])


NAME_IN_TEXT = re.compile(r"(?<![\w/.$-])((?:edge|train|bench|calibration)(?:[./](?!py\b)[a-z_][a-z0-9_]*)*)(\.py|/)?(?![\w-])")


def names_in(text: str) -> dict[str, str]:
    """Dotted module/package names written in ``text`` (as ``edge.spec``, ``edge/spec.py`` or
    ``edge/camera/``) -> how they were written; link targets are left out."""
    text = re.sub(r"\]\([^)]*\)", "]", text)
    return {match.group(1).replace("/", "."): match.group(0) for match in NAME_IN_TEXT.finditer(text)}


def exists(dotted: str) -> bool:
    path = ROOT.joinpath(*dotted.split("."))
    return (path / "__init__.py").is_file() or path.with_suffix(".py").is_file()


def test_layout_names_every_package() -> None:
    named = names_in(layout_section())
    missing = sorted(packages_in_tree() - set(named))
    assert not missing, f"the Layout section of docs/architecture.md does not name: {', '.join(missing)}"


def test_layout_names_nothing_that_does_not_exist() -> None:
    named = names_in(layout_section())
    absent = sorted(f"{written} ({dotted})" for dotted, written in named.items() if not exists(dotted))
    assert not absent, f"the Layout section of docs/architecture.md names what does not exist: {', '.join(absent)}"


def test_layout_table_modules_exist() -> None:
    """A Layout table row about a package folder (`edge/quantize/`) names its modules bare (`cli.py`):
    each must be a file in that folder."""
    absent = []
    for row in layout_section().splitlines():
        cells = row.split("|")
        folder = re.fullmatch(r"\s*`([\w/]+/)`.*", cells[1]) if row.startswith("|") and len(cells) > 2 else None
        if folder is None:
            continue
        for cell in cells[2:]:
            for name in re.findall(r"(?<![\w/.-])([a-z_][a-z0-9_]*\.py)\b", cell):
                if not (ROOT / folder.group(1) / name).is_file():
                    absent.append(f"{folder.group(1)}{name}")
    assert not absent, f"the Layout section of docs/architecture.md names modules that do not exist: {', '.join(absent)}"


def test_python_paths_in_the_docs_exist() -> None:
    pattern = re.compile(r"(?<![\w/.$~-])((?:edge|train|bench|calibration|tests)/[\w/]*\w\.py)\b")
    absent = [
        f"{path.relative_to(ROOT)}: {match.group(1)}"
        for path in doc_files()
        for match in pattern.finditer(path.read_text())
        if not (ROOT / match.group(1)).is_file()
    ]
    assert not absent, "\n".join(absent)


# ---- the front door ------------------------------------------------------------------------------


def test_readme_is_a_front_door_that_links_every_docs_page() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= README_MAX_LINES, f"README.md has {len(readme.splitlines())} lines"
    linked = {target.split("#")[0] for target in LINK.findall(readme)}
    pages = {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")}
    assert pages, "no docs/*.md pages"
    assert not pages - linked, f"README.md does not link {sorted(pages - linked)}"


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors of a markdown file: lower case, punctuation dropped, spaces to '-'."""
    found: set[str] = set()
    fenced = False
    for line in path.read_text().splitlines():
        fenced ^= line.lstrip().startswith("```")
        match = None if fenced else re.match(r"#+\s+(.*)", line)
        if match:
            slug = re.sub(r"[^\w\- ]", "", match.group(1).lower()).replace(" ", "-")
            base, n = slug, 1
            while slug in found:
                slug, n = f"{base}-{n}", n + 1
            found.add(slug)
    return found


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path) -> None:
    """Every relative link names a file that exists and, with #anchor, a heading in it."""
    broken = []
    for target in LINK.findall(path.read_text()):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        if not linked.exists():
            broken.append(target)
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{path.relative_to(ROOT)} links to what is not there: {broken}"
