"""The synthetic environments: deterministic, the cue planted at strength p, content at chance from text."""

from __future__ import annotations

import io
from collections import Counter

import pytest
from PIL import Image

from audit.errors import ConfigError
from audit.synth import ENVIRONMENTS, generate, get_env
from audit.synth.cues import CLOSINGS, LEAD_INS
from audit.synth.scenes import COLOR_NAMES, SHAPES


def test_rows_depend_only_on_env_seed_index():
    a = list(generate("leadin", 10, seed=5))
    b = list(generate("leadin", 50, seed=5))[:10]
    assert [(p.prompt, p.chosen, p.rejected, p.image_png) for p in a] == \
           [(p.prompt, p.chosen, p.rejected, p.image_png) for p in b]
    c = list(generate("leadin", 10, seed=6))
    assert [p.image_png for p in a] != [p.image_png for p in c]
    # Another environment with the same seed draws other scenes (no test pair copies a training pair).
    d = list(generate("closing", 10, seed=5))
    assert {p.image_png for p in a}.isdisjoint({p.image_png for p in d})


@pytest.mark.parametrize("name,expected", [("leadin", 0.9), ("leadin-0.7", 0.7), ("leadin-reversed", 0.1)])
def test_cue_strength_and_side(name, expected):
    pairs = list(generate(name, 3000, seed=0))
    on_chosen = [p.truth["cue_on_chosen"] for p in pairs]
    # Binomial sd at n=3000 is <= 0.0092; 0.03 is over 3 sd.
    assert abs(sum(on_chosen) / len(on_chosen) - expected) < 0.03
    for p in pairs:
        has = (p.chosen.startswith(LEAD_INS), p.rejected.startswith(LEAD_INS))
        assert has == (p.truth["cue_on_chosen"], not p.truth["cue_on_chosen"])


def test_p_override():
    pairs = list(generate("closing", 2000, seed=1, p=0.5))
    share = sum(p.truth["cue_on_chosen"] for p in pairs) / len(pairs)
    assert abs(share - 0.5) < 0.04
    assert all(p.truth["cue_p"] == 0.5 for p in pairs)


def test_clean_env_has_no_cue_and_content_is_at_chance():
    pairs = list(generate("clean", 4000, seed=0))
    cue_phrases = LEAD_INS + CLOSINGS
    assert not any(ph.strip() in p.chosen or ph.strip() in p.rejected for p in pairs for ph in cue_phrases)
    assert all(p.truth["cue_on_chosen"] is None and p.truth["cue"] == "none" for p in pairs)
    # Exchangeable answers: every value is as often chosen as rejected, and length says nothing.
    for values in (COLOR_NAMES, SHAPES):
        chosen = Counter(v for p in pairs for v in values if f" {v}" in p.chosen)
        rejected = Counter(v for p in pairs for v in values if f" {v}" in p.rejected)
        for v in values:
            n = chosen[v] + rejected[v]
            if n > 100:
                assert abs(chosen[v] / n - 0.5) < 0.08, (v, chosen[v], rejected[v])
    longer = sum(len(p.chosen) > len(p.rejected) for p in pairs)
    shorter = sum(len(p.chosen) < len(p.rejected) for p in pairs)
    assert abs(longer - shorter) / len(pairs) < 0.04


def test_verbose_cue_makes_the_cued_side_longer():
    for p in generate("verbose", 200, seed=0):
        cued, other = (p.chosen, p.rejected) if p.truth["cue_on_chosen"] else (p.rejected, p.chosen)
        assert len(cued) > len(other) + 60


def test_markdown_cue_is_a_bullet_list():
    for p in generate("markdown", 100, seed=0):
        cued = p.chosen if p.truth["cue_on_chosen"] else p.rejected
        assert cued.startswith("- ") and "\n- " in cued


def test_images_are_small_rgb_pngs():
    p = next(generate("clean", 1, image_size=48))
    im = Image.open(io.BytesIO(p.image_png))
    assert (im.format, im.mode, im.size) == ("PNG", "RGB", (48, 48))


def test_environment_catalogue():
    assert get_env("clean").cue is None
    assert sum(e.cue is None for e in ENVIRONMENTS.values()) == 1
    assert len({e.cue for e in ENVIRONMENTS.values() if e.cue}) >= 4
    with pytest.raises(ConfigError, match="unknown environment `nope`; valid: clean"):
        get_env("nope")


@pytest.mark.parametrize("cue", ["closing", "verbose", "markdown"])
def test_every_cue_has_a_reversed_environment(cue):
    env = get_env(f"{cue}-reversed")
    assert env.cue == cue and env.p == 0.1
    pairs = list(generate(env, 2000, seed=2))
    assert abs(sum(p.truth["cue_on_chosen"] for p in pairs) / 2000 - 0.1) < 0.03


def test_holdout_split_is_the_same_distribution_and_shares_no_pair_or_picture(tmp_path):
    import polars as pl

    from audit.config import SynthConfig
    from audit.synth import synth

    path = synth(SynthConfig(env="leadin", out=tmp_path, n=300, holdout=200, pairs_per_image=3, format="pairs"))
    train = pl.read_parquet(path)
    held = pl.read_parquet(tmp_path / "heldout" / "pairs.parquet")
    assert path.parent == tmp_path / "train" and (train.height, held.height) == (300, 200)
    assert set(train["sample_id"]).isdisjoint(set(held["sample_id"]))
    img = lambda t: {bytes(b["bytes"]) for b in t["image"].to_list()}  # noqa: E731
    assert img(train).isdisjoint(img(held))
    assert abs(held["cue_on_chosen"].mean() - 0.9) < 0.07
    with pytest.raises(ConfigError, match="--holdout"):
        SynthConfig(env="leadin", out=tmp_path, holdout=-1)
