"""The project's documents resolve: every `docs/*.md` path (and `#anchor`) named in the package, the tests, the
READMEs and docs/ exists, every relative markdown link and every file path in backticks in the docs points at
something in the tree, and the README's layout map names only what exists. Nothing refers to documents
outside the project.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Where project text lives (run outputs such as runs/ are not scanned).
TEXT_ROOTS = ("dsunlearn", "tests", "benchmarks", "docs", "launch", ".ci")
TOP_FILES = ("README.md", "setup.py", "Dockerfile", "pytest.ini", "ruff.toml")
TEXT_SUFFIXES = {".py", ".md", ".sh", ".sbatch", ".toml", ".yaml", ".yml", ".json", ".ini", ".cfg", ".txt", ""}

DOC_REF = re.compile(r"(?<![\w/.])docs/[\w./-]+?\.md(?:#[\w-]+)?")
MD_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$")
# A repository path in backticks: `dsunlearn/engine/shard.py`, `engine/delta.py: save_delta_shard`, `tests/unit/`
CODE_PATH = re.compile(r"`((?:[\w.-]+/)+(?:[\w.-]+\.(?:py|md|sh|json|yaml|sbatch))?)(?::[^`]*)?`")
# Documents outside the project that files once pointed to (this file is the one allowed to name them).
FOREIGN = re.compile(r"METHODS\.md|DEEPSPEED_NOTES|DESIGN\.md|/work/shared\b|(?:^|[\s`'\"(])(?:\.\./)*shared/")


def text_files() -> list[Path]:
    files = [ROOT / f for f in TOP_FILES if (ROOT / f).is_file()]
    for top in TEXT_ROOTS:
        for p in sorted((ROOT / top).rglob("*")):
            if p.is_file() and "__pycache__" not in p.parts and (p.suffix in TEXT_SUFFIXES or top == ".ci"):
                files.append(p)
    return files


def markdown_files() -> list[Path]:
    return [p for p in text_files() if p.suffix == ".md"]


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, markdown punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    """Every heading anchor of a markdown file (repeated headings get -1, -2 as on GitHub); fenced code skipped."""
    seen: dict[str, int] = {}
    out = set()
    fenced = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        m = None if fenced else HEADING.match(line)
        if m:
            s = slug(m.group(1))
            n = seen.get(s, 0)
            out.add(s if n == 0 else f"{s}-{n}")
            seen[s] = n + 1
    return frozenset(out)


def problem(target: Path, anchor: str | None) -> str | None:
    if not target.exists():
        return f"{target.relative_to(ROOT) if target.is_relative_to(ROOT) else target} does not exist"
    if anchor and (target.suffix != ".md" or anchor not in anchors(target)):
        return f"{target.relative_to(ROOT)} has no heading for #{anchor}"
    return None


def _rel(p: Path) -> str:
    return str(p.relative_to(ROOT))


def test_slug_matches_github():
    assert slug("Forget objectives") == "forget-objectives"
    assert slug("Collectives in lockstep (ZeRO-3)") == "collectives-in-lockstep-zero-3"
    assert slug("`data.tofu_official: true` (only with `tofu_phi` / `tofu_llama2`)") == (
        "datatofu_official-true-only-with-tofu_phi--tofu_llama2"
    )


def test_every_docs_path_exists():
    bad = []
    for f in text_files():
        if f == Path(__file__).resolve():
            continue
        for ref in DOC_REF.findall(f.read_text(encoding="utf-8", errors="replace")):
            path, _, anchor = ref.partition("#")
            why = problem(ROOT / path.rstrip("."), anchor or None)
            if why:
                bad.append(f"{_rel(f)}: {ref}: {why}")
    assert not bad, "\n".join(bad)


def test_markdown_links_resolve():
    bad = []
    for md in markdown_files():
        for target in MD_LINK.findall(md.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            why = problem((md.parent / path).resolve() if path else md, anchor or None)
            if why:
                bad.append(f"{_rel(md)}: ({target}): {why}")
    assert not bad, "\n".join(bad)


def _code_path_exists(md: Path, path: str) -> bool:
    """A path in backticks, relative to the repository, to dsunlearn/ (`engine/shard.py`) or to the file."""
    return any((base / path).exists() for base in (ROOT, ROOT / "dsunlearn", md.parent))


@pytest.mark.parametrize("doc", ["README.md", *sorted(_rel(p) for p in (ROOT / "docs").glob("*.md"))])
def test_code_paths_in_docs_exist(doc):
    md = ROOT / doc
    missing = []
    for path in CODE_PATH.findall(md.read_text(encoding="utf-8")):
        # `<run>/eval/`, `runs/demo/...`, `checkpoints/stepN/`: run-directory layouts, not repository paths
        if re.search(r"[<>*{}]|^(runs|checkpoints|delta|eval|model|uipe|geffect|wandb)/", path):
            continue
        if not _code_path_exists(md, path):
            missing.append(path)
    assert not missing, f"{doc} names paths that are not in the tree: {missing}"


def layout_block() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Layout", 1)[1].split("\n## ", 1)[0]
    return section.split("```", 2)[1]


def layout_problems(block: str) -> list[str]:
    """Paths of the layout map that are not in the tree. A line is `<entries>  <description>`: entries at
    column 0 are repository paths, entries indented under `dsunlearn/` are inside it; file and directory names
    in a description (and its continuation lines) are inside the line's last directory entry."""
    missing, base, entry_dir = [], "", ""
    for line in block.splitlines():
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if indent <= 2:  # an entry line
            base = "" if indent == 0 else "dsunlearn/"
            head, _, desc = line.strip().partition("  ")
            entries = [e.strip() for e in head.split(",")]
            missing += [base + e for e in entries if not (ROOT / base / e).exists()]
            dirs = [e for e in entries if e.endswith("/")]
            entry_dir = base + dirs[-1] if dirs else base
        else:  # a description continued
            desc = line
        for name in re.findall(r"[\w.-]+\.(?:py|md)\b|[\w-]+/(?!\w)", desc):
            if not any((ROOT / d / name).exists() for d in (entry_dir, base)):
                missing.append(entry_dir + name)
    return missing


def test_readme_layout_matches_the_tree():
    """Every path the README's layout map names exists; every package of dsunlearn/ is on the map."""
    block = layout_block()
    missing = layout_problems(block)
    assert not missing, f"README layout names paths that are not in the tree: {missing}"
    packages = sorted(p.parent.name for p in (ROOT / "dsunlearn").glob("*/__init__.py"))
    absent = [p for p in packages if f"{p}/" not in block]
    assert not absent, f"packages of dsunlearn/ missing from the README layout: {absent}"


def test_layout_checker_sees_a_wrong_path():
    assert layout_problems("dsunlearn/\n  engine/   shard.py, nothere.py\n") == ["dsunlearn/engine/nothere.py"]
    assert layout_problems("dsunlearn/\n  nopkg/   x\nnodir/, docs/  y\n") == ["dsunlearn/nopkg/", "nodir/"]


def test_no_references_to_documents_outside_the_project():
    bad = []
    for f in text_files():
        if f == Path(__file__).resolve():
            continue
        for i, line in enumerate(f.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if FOREIGN.search(line):
                bad.append(f"{_rel(f)}:{i}: {line.strip()[:100]}")
    assert not bad, "files refer to documents outside the project (write it in docs/ instead):\n" + "\n".join(bad)
