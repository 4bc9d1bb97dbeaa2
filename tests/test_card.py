"""The data card: valid YAML header, numbers equal to summary.json, figures (PNG or labelled HTML)."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from audit.card import HEADLINE, card, fmt
from audit.config import CardConfig, ExportConfig, ScoreConfig, SynthConfig
from audit.export import export
from audit.markup import md_message
from audit.score import score
from audit.synth import synth


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    root = tmp_path_factory.mktemp("card")
    src = synth(SynthConfig(env="verbose", out=root / "src", n=150, format="alignrm"))
    score(ScoreConfig(source=src.parent, out=root / "audit", cache_dir=root / "cache"))
    export(ExportConfig(audit=root / "audit", out=root / "export", mode="prune"))
    return root


def _split(text: str) -> tuple[dict, str]:
    m = re.match(r"^---\n(.*?)\n---\n(.*)$", text, re.S)
    assert m, "no YAML front matter"
    return yaml.safe_load(m.group(1)), m.group(2)


def test_card_header_numbers_and_sections(audited, tmp_path):
    path = card(CardConfig(audit=audited / "audit", out=tmp_path, name="verbose-card", license="cc-by-4.0",
                           export=audited / "export", figures="html"))
    header, body = _split(path.read_text())
    assert header["license"] == "cc-by-4.0" and header["size_categories"] == ["n<1K"]
    assert header["task_categories"] == ["image-text-to-text"] and header["source_datasets"] == ["original"]
    summary = json.loads((audited / "audit" / "summary.json").read_text())
    for label, key in HEADLINE:
        row = re.search(rf"^\| {re.escape(label)} \| `{key}` \| (.+?) \|$", body, re.M)
        assert row, key
        assert row.group(1) == fmt(summary[key])
    for section in ("## How it was audited", "## Headline numbers", "## Top cues", "## Weight distribution",
                    "## What was exported", "## Known limitations"):
        assert section in body
    assert f"| `{summary['cues'][0]['name']}` | {fmt(summary['cues'][0]['coefficient'])} |" in body
    assert "Mode `prune`" in body and "Example for `length`" in body
    assert "interactive HTML chart" in body and (tmp_path / "verbose-card" / "weights.html").is_file()
    assert [line[len("> **Warning:** "):-1] for line in body.splitlines() if line.startswith("> **Warning:**")] \
        == [md_message(w) for w in summary["warnings"]]         # the summary's warnings, as text
    assert str(audited) not in path.read_text()                 # the audit ran on absolute paths: none is published
    assert "shortcut-audit score src -o audit " in body


def test_a_card_shows_paths_without_the_machines_folders():
    from audit.card import public_path

    assert public_path("/home/alice/data/vlf/") == "vlf" and public_path("~/models/clip") == "clip"
    assert public_path("C:\\Users\\alice\\pairs") == "pairs"
    assert public_path("my_pairs/leadin") == "my_pairs/leadin" and public_path("minilm") == "minilm"
    assert public_path(5) == 5 and public_path(None) is None


def test_png_figures_or_a_labelled_fallback(audited, tmp_path, monkeypatch):
    import plotly.graph_objects as go

    def no_browser(self, *a, **k):
        raise RuntimeError("no Chrome found")

    monkeypatch.setattr(go.Figure, "write_image", no_browser)
    path = card(CardConfig(audit=audited / "audit", out=tmp_path, name="c"))
    body = path.read_text()
    assert "static export was not available here (RuntimeError: no Chrome found)" in body
    assert sorted(p.name for p in (tmp_path / "c").glob("*.html")) == ["cues.html", "sfc.html", "shortcut_map.html",
                                                                       "weights.html"]


def test_png_figures_when_a_browser_engine_is_present(audited, tmp_path):
    import shutil

    if not (shutil.which("chromium") or shutil.which("google-chrome")):
        pytest.skip("no Chromium here: PNG figures need it (CI installs it)")
    path = card(CardConfig(audit=audited / "audit", out=tmp_path, name="c", figures="png"))
    assert "![Weight distribution](weights.png)" in path.read_text()
    assert (tmp_path / "c" / "weights.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_card_sections_for_a_user_and_offline_charts(audited, tmp_path):
    path = card(CardConfig(audit=audited / "audit", out=tmp_path, name="c", export=audited / "export", figures="html"))
    body = path.read_text()
    for section in ("## Dataset structure", "## Using the data", "## Citation"):
        assert section in body
    assert 'load_dataset("parquet", data_files="pairs.parquet"' in body and "@inproceedings{li25cw" in body
    assert "| `weight` |" in body and "-F.logsigmoid(r_chosen - r_rejected)" in body
    assert (path.parent / "plotly.min.js").is_file()            # the HTML charts render without a network
    assert 'src="plotly.min.js"' in (path.parent / "weights.html").read_text()
    how = body.split("## How it was audited")[1].split("## Headline numbers")[0]
    assert "`finetune_lr`" not in how and "`out`" not in how and "`scheme`" in how    # only the settings used
    examples = re.findall(r"^Example for `(\w+)` \(text_prob [0-9.]+, pair `(\w+)`\)", body, re.M)
    assert examples and len({pid for _, pid in examples}) == len(examples)            # each cue its own pair


def test_source_datasets_come_from_the_data():
    import polars as pl

    from audit.card import settings_used, source_datasets

    real = pl.DataFrame({"pair_id": ["a"]})
    synthetic = pl.DataFrame({"pair_id": ["a"], "env": ["leadin"], "cue_on_chosen": [True]})
    summary = {"per_source": [{"source": "rlaif-v"}, {"source": "povid"}, {"source": "alignrm"}]}
    cfg = CardConfig(audit="a", out="o")
    assert source_datasets(cfg, real, summary) == ["YiyangAiLab/POVID_preference_data_for_VLLMs", "openbmb/RLAIF-V-Dataset"]
    assert source_datasets(cfg, synthetic, summary) == ["original"]
    assert source_datasets(cfg, real, {"per_source": [{"source": "alignrm"}]}) == ["original"]
    assert source_datasets(CardConfig(audit="a", out="o", source_dataset="me/mine"), real, summary) == ["me/mine"]
    used = settings_used({"scheme": "debias", "text_probe": "embedding", "finetune_lr": 5e-5, "rm": None,
                          "rm_blank": "reference", "out": "x", "text_only": False})
    assert used == {"scheme": "debias", "text_probe": "embedding", "text_only": False}


def test_the_card_shows_the_datas_markup_as_text(tmp_path):
    """Prompts, answers, sample ids, a column name and the warnings that quote them carry links, remote
    images, headings, `<script>`, `<iframe>` and backticks: the Hub would render none of them."""
    from conftest import hostile_audit, live_markup

    audit = hostile_audit(tmp_path)
    body = _split(card(CardConfig(audit=audit, out=tmp_path / "cards", name="hostile", figures="html"))
                  .read_text(encoding="utf-8"))[1]
    assert "Example for `length`" in body and "## Dataset structure" in body and "> **Warning:**" in body
    assert live_markup(body) == []
    from markdown_it import MarkdownIt

    html = MarkdownIt("commonmark").enable("table").render(body).replace("\u2060", "")   # shown as the data's text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "![pixel](http://127.0.0.1:9/pixel.png)" in html


def test_code_spans_and_fences_hold_any_backticks():
    """A value with backtick runs stays inside its code span or fence (a card's command line, a setting)."""
    from markdown_it import MarkdownIt

    from audit.markup import md_code, md_fence

    md = MarkdownIt("commonmark", {"html": True}).enable("table")
    assert md.render(md_code("a ``b`` `c")) == "<p><code>a ``b`` `c</code></p>\n"
    html = md.render("\n".join(md_fence("score ```\n<script>x</script>\n````", "bash")))
    assert html.count("<pre>") == 1 and "<script>" not in html and "&lt;script&gt;" in html
    cell = md.render("| v |\n|---|\n| " + md_code("x|`y`", table=True) + " |")
    assert "<td><code>x|`y`</code></td>" in cell
