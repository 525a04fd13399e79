"""The READMEs under results/ cite files that exist and the figures their leaderboards hold.

A cited repository path is any ``benchmarks/...``, ``results/...``, ``docs/...`` (and the package folders) in the
text, commands included (outputs written under results/ must be there); a bare file name in backticks
(```robustness.md```) must lie beside the README or at the repository root. Paths outside the repository
(``../benchbone-runs/...``, absolute ones) are not checked.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
READMES = sorted((REPO / "results").glob("**/README.md"))
TOP = ("benchmarks", "results", "docs", "benchbone", "plugins", "tests", "examples")
PATH = re.compile(rf"(?<![\w./~$-])((?:{'|'.join(TOP)})/[\w.*/{{}}-]*[\w*}}])")
BARE = re.compile(r"`([\w.-]+\.(?:md|csv|json|png|svg|html|txt|toml|py))`")


def cited(text: str) -> list[str]:
    """The repository paths ``text`` names (see the module docstring)."""
    return sorted({m.group(1) for m in PATH.finditer(text)})


def missing(readme: Path) -> list[str]:
    text = readme.read_text(encoding="utf-8")
    gone = [p for p in cited(text)
            if not (any(REPO.glob(p)) if set(p) & set("*{") else (REPO / p).exists())]
    gone += [f for f in sorted({m.group(1) for m in BARE.finditer(text)})
             if not ((readme.parent / f).exists() or (REPO / f).exists())]
    return gone


def test_the_path_finder_finds_repository_paths_only():
    text = ("Suite: `benchmarks/cifar10.toml`; see docs/statistics.md). Run dir ../benchbone-runs/x and "
            "/work/benchbone-runs/results/y; -o results/quickstart/leaderboard.md --plot results/a/*.png.")
    assert cited(text) == ["benchmarks/cifar10.toml", "docs/statistics.md", "results/a/*.png",
                           "results/quickstart/leaderboard.md"]


def test_there_are_readmes():
    assert len(READMES) >= 5


@pytest.mark.parametrize("readme", READMES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_cited_path_exists(readme):
    assert missing(readme) == [], f"{readme.relative_to(REPO)} cites files that do not exist"


def test_quickstart_figures_are_the_leaderboards():
    """Every two-decimal figure the quickstart README quotes is in its leaderboard.md (written by the same run),
    except in its "What changed" bullet, which quotes the board it replaced."""
    folder = REPO / "results" / "quickstart"
    board = (folder / "leaderboard.md").read_text(encoding="utf-8")
    text = (folder / "README.md").read_text(encoding="utf-8")
    text = re.sub(r"\n- What changed.*?(?=\n- |\n\n)", "", text, flags=re.S)
    figures = set(re.findall(r"(?<![\d.])\d+\.\d\d(?!\d)", text))
    assert figures and not [f for f in sorted(figures) if f not in board]
