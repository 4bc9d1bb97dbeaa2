"""The README and docs/: one screenful per question, links that resolve, the set-up commands CI runs,
and a demo block that is what the demo prints (`docs/readme_demo.py` writes it)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]


def _generator():
    spec = importlib.util.spec_from_file_location("readme_demo", ROOT / "docs" / "readme_demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _prose(text: str) -> str:
    """The text without fenced code blocks and inline code (a link inside code is not a link)."""
    text = re.sub(r"^(```|~~~).*?^\1\s*$", "", text, flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def _anchors(page: Path) -> Iterator[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to '-', repeats numbered."""
    seen: dict[str, int] = {}
    for title in re.findall(r"^#{1,6} +(.+?) *#*$", re.sub(r"^```.*?^```\s*$", "", page.read_text(encoding="utf-8"),
                                                           flags=re.M | re.S), re.M):
        slug = re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
        seen[slug] = seen.get(slug, -1) + 1
        yield slug if seen[slug] == 0 else f"{slug}-{seen[slug]}"


def test_anchors_follow_github():
    page = ROOT / "docs" / "SCORE.md"
    assert {"which-words-phrases-the-prompt-blind-accuracy-and-the-cue-intervals",
            "shortcut-audit-score-in-depth"} <= set(_anchors(page))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page):
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", _prose(page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):          # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target} (no file {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest})")
        elif anchor and dest.suffix == ".md" and anchor not in set(_anchors(dest)):
            broken.append(f"{target} (no heading with anchor #{anchor} in {dest.name})")
    assert not broken, f"{page.relative_to(ROOT)}: broken links: " + "; ".join(broken)


def test_the_readme_is_one_screenful_per_question():
    text = README.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) <= 230, f"README.md has {len(lines)} lines: keep it near 200, move reference text to docs/"
    headings = [h for h in re.findall(r"^## (.+)$", _prose(text), re.M)]
    order = ["Set up and run the demo", "Audit your own data", "Reading the results", "The app", "Export and train",
             "More"]
    assert [h for h in headings if h in order] == order, headings
    own_data = next(i for i, line in enumerate(lines) if line == "## Audit your own data")
    assert own_data < 50, f"`Audit your own data` starts at line {own_data + 1}: a new user must reach it on the first screen"
    for question in ('"image": ', "--image-root", "--copy-images", "--text-only"):
        assert question in text[text.index("## Audit your own data"):text.index("## The demo's output")], question


def test_the_readme_set_up_commands_are_what_ci_runs():
    readme, ci = README.read_text(encoding="utf-8"), (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    setup = re.search(r"## Set up and run the demo\n+```bash\n(.*?)```", readme, re.S).group(1)
    assert "pip install -e '.[test,trl]'" in setup and "pip install -q -e '.[test,trl]'" in ci
    assert "HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python -m pytest -q" in setup
    assert "export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1" in ci and "\npython -m pytest -q" in ci


def _numbers(text: str) -> set[str]:
    return set(re.findall(r"(?<![\w.-])\d+(?:\.\d+)?%?(?!\w)", text))


@pytest.mark.parametrize("section", ["## The demo's output", "## Reading the results"])
def test_the_numbers_in_the_prose_after_an_output_block_are_in_that_block(section):
    """The sentences that explain an output quote it: no number there that the output does not show."""
    text = README.read_text(encoding="utf-8")
    body = text[text.index(section):]
    body = body[:body.index("\n## ", 1)]
    block, after = re.search(r"```text\n(.*?)```\n(.*?)(?:\n\n\||\Z)", body, re.S).groups()
    missing = _numbers(after) - _numbers(block)
    assert not missing, f"{section}: the prose quotes {sorted(missing)}, which its output block does not show"


def test_the_demo_block_masks_only_timings_and_the_output_folder():
    gen = _generator()
    readme = f"intro\n{gen.BEGIN}\n```text\nold\n```\n{gen.END}\nafter\n"
    new = gen.with_block(readme, "[train] x -> /path/to/d: acc 91.5%, 0.9s\ningest (600 rows in 1.0s)\n")
    assert new.startswith("intro\n") and new.endswith(f"{gen.END}\nafter\n")
    assert gen.difference(new, "[train] x -> /path/to/d: acc 91.5%, 12.9s\ningest (600 rows in 0.7s)\n") == ""
    assert "+[train] x -> /path/to/d: acc 91.6%" in gen.difference(new, "[train] x -> /path/to/d: acc 91.6%, 0.9s\n")
    with pytest.raises(ValueError, match="needs one demo block"):
        gen.block_of("no block here")
