"""The docs stay true to the code: every option the parser knows is in docs/cli.md under its
command's heading, and every relative link in README.md and docs/*.md resolves (file and
#anchor). The docs site itself is built by `make docs` (mkdocs --strict)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from dalif_deploy.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
CLI_DOC = ROOT / "docs" / "cli.md"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 200  # the five-minute tour; the reference belongs in docs/


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


COMMANDS = _commands()


def _options(command: argparse.ArgumentParser) -> list[argparse.Action]:
    """The command's options, the deferred ones included: a deferred parser adds its arguments
    when its help is formatted (``dalif_deploy.cli._defer``)."""
    command.format_help()
    return [a for a in command._actions
            if a.option_strings and not isinstance(a, argparse._HelpAction)]


def _sections(text: str) -> dict[str, str]:
    """``## heading`` -> the text up to the next ``## `` heading."""
    parts = re.split(r"^## +(.+?)\s*$", text, flags=re.M)
    return {parts[i].strip("` "): parts[i + 1] for i in range(1, len(parts), 2)}


def _mentions(text: str, word: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


def test_the_deferred_options_are_seen():
    """The check below would pass vacuously if deferred options were missed."""
    names = {o for a in _options(COMMANDS["simulate"]) for o in a.option_strings}
    assert {"--backend", "--dataset", "--device"} <= names


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_of_every_command_is_in_its_cli_doc_section(name):
    sections = _sections(CLI_DOC.read_text())
    assert name in sections, f"docs/cli.md: add a '## {name}' section"
    section = sections[name]
    missing = [o for a in _options(COMMANDS[name]) for o in a.option_strings
               if not _mentions(section, o)]
    missing += [f"{a.option_strings[0]} {c}" for a in _options(COMMANDS[name])
                for c in (a.choices or ()) if not _mentions(section, str(c))]
    assert not missing, f"docs/cli.md '## {name}': document {missing}"


def test_top_level_options_are_in_the_cli_doc():
    text = CLI_DOC.read_text()
    parser = build_parser()
    for action in parser._actions:
        for option in action.option_strings:
            assert _mentions(text, option), f"docs/cli.md: document {option}"


def _prose(text: str) -> str:
    """``text`` without fenced or indented code blocks (their brackets are not links)."""
    out, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced and not line.startswith(("    ", "\t")):
            out.append(line)
    return "\n".join(out)


def _slug_github(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _slug_mkdocs(heading: str) -> str:  # Python-Markdown's toc slugify
    return re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", heading).strip().lower())


def _anchors(path: Path) -> set[str]:
    """The anchors both GitHub and mkdocs give this file's headings (a link must work in both)."""
    headings = re.findall(r"^#{1,6} +(.+?)\s*#*\s*$", _prose(path.read_text()), flags=re.M)
    return {_slug_github(h) for h in headings if _slug_github(h) == _slug_mkdocs(h)}


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _links(path: Path) -> list[str]:
    return [t for t in LINK.findall(_prose(path.read_text()))
            if not re.match(r"[a-z][a-z0-9+.-]*:", t)]  # http:, mailto:, ...: not ours


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(doc):
    broken = []
    for target in _links(doc):
        file, _, anchor = target.partition("#")
        dest = (doc.parent / file).resolve() if file else doc
        if not dest.exists():
            broken.append(f"{target} (no file {dest.relative_to(ROOT)})")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target} (no heading #{anchor} in {dest.relative_to(ROOT)})")
    assert not broken, f"{doc.relative_to(ROOT)}: broken links {broken}"


def test_the_link_checker_sees_links_and_catches_a_broken_one(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n## A `cli` heading\n\n[ok](#a-cli-heading) [bad](#nope)\n"
                    "[gone](missing.md) [web](https://example.org)\n\n    [code](not-a-link)\n")
    assert _links(page) == ["#a-cli-heading", "#nope", "missing.md"]
    assert "a-cli-heading" in _anchors(page) and "nope" not in _anchors(page)


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_table_cell_holds_a_pipe_in_code(doc):
    """GitHub splits a table cell at a pipe even inside `code` (unless escaped) and mkdocs shows
    the escape: write choices as `a`, `b` in tables."""
    rows = [line for line in _prose(doc.read_text()).splitlines() if line.startswith("|")]
    bad = [span for row in rows for span in re.findall(r"`([^`]*)`", row) if "|" in span]
    assert not bad, f"{doc.relative_to(ROOT)}: a pipe in a table's code span: {bad}"


def test_the_docs_link_somewhere():
    """The README links every reference page, so a newcomer can find them."""
    readme_links = {t.partition("#")[0] for t in _links(ROOT / "README.md")}
    pages = {p.relative_to(ROOT).as_posix() for p in DOCS[1:] if p.name != "index.md"}
    assert not pages - readme_links, f"README.md: link {sorted(pages - readme_links)}"


def test_the_readme_stays_a_short_tour():
    lines = len((ROOT / "README.md").read_text().splitlines())
    assert lines <= README_MAX_LINES, (f"README.md has {lines} lines (at most "
                                       f"{README_MAX_LINES}): move reference text to docs/")
