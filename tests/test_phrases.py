"""Phrase discovery (length-adjusted one-sidedness, exact counts, function words apart, Tarone's
correction), the lexical and prompt-blind components, cue uncertainty and text-only audits."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from audit.config import ScoreConfig, SynthConfig
from audit.probes.lexical import pair_features, vectorizer
from audit.probes.phrases import bucket_of, merge_phrases, phrase_regex, tarone_tests
from audit.score import score
from audit.synth import generate, synth

N = 1500


@pytest.fixture(scope="module")
def aside(tmp_path_factory):
    root = tmp_path_factory.mktemp("aside")
    src = synth(SynthConfig(env="aside", out=root / "src", n=N))
    return score(ScoreConfig(source=src.parent, out=root / "audit", cache_dir=root / "cache"))


def test_planted_phrase_on_no_cue_list_is_the_top_discovered_phrase(aside):
    top = aside["phrases"][0]
    assert top["phrase"] == "as it happens" and top["significant"] and top["z"] > 0
    assert top["support"] == top["n_chosen"] + top["n_rejected"] and top["precision"] > 0.85
    assert abs(aside["lexical_acc"] - 0.9) < 0.04          # the planted strength, from the lexical component
    assert abs(aside["prompt_blind_acc"] - 0.9) < 0.04     # a property of the answers alone
    assert "as_it_happens" not in {c["name"] for c in aside["cues"]}


def test_phrase_counts_are_the_pairs_with_the_phrase_on_one_side(aside, tmp_path):
    df = pl.read_parquet(aside["pairs_dir"] + "/pairs.parquet")
    rx = phrase_regex("as it happens")
    c, r = df["chosen"].str.contains(rx), df["rejected"].str.contains(rx)
    top = aside["phrases"][0]
    assert top["n_chosen"] == int((c & ~r).sum()) and top["n_rejected"] == int((r & ~c).sum())
    truth = df["cue_on_chosen"]
    assert top["n_chosen"] == int(truth.sum()) and top["n_rejected"] == int((~truth).sum())
    assert len(top["examples"]) == 3 and set(top["examples"]) <= set(df["pair_id"].to_list())


def test_no_phrase_and_no_cue_stand_out_on_clean_data(tmp_path):
    src = synth(SynthConfig(env="clean", out=tmp_path / "src", n=N))
    s = score(ScoreConfig(source=src.parent, out=tmp_path / "audit", cache_dir=tmp_path / "cache"))
    assert not any(p["significant"] for p in s["phrases"] + s["function_words"])
    # near chance (a finite templated sample may hold a few points of real text signal: the same two answers
    # recur with other pictures, and which one wins by chance is learnable; 48.0% on 20,000 such pairs)
    assert abs(s["text_acc"] - 0.5) < 0.05 and s["slices"]["carriers"] == []
    assert s["top_cue"] is None and s["cue_stands_out"] is False
    assert all(c["ci_low"] <= 0 <= c["ci_high"] for c in s["cues"])


def test_cue_intervals_contain_the_coefficient_and_exclude_zero_for_the_planted_cue(aside):
    for c in aside["cues"]:
        assert c["ci_low"] <= c["coefficient"] + 1e-6 and c["coefficient"] - 1e-6 <= c["ci_high"]
    first = aside["cues"][0]
    assert first["stands_out"] and aside["top_cue"] == first["name"]


def test_overlapping_ngrams_merge_into_the_longest_phrase():
    cands = [{"phrase": "it happens", "z": 4.0, "pairs": 100},
             {"phrase": "as", "z": 4.0, "pairs": 120},
             {"phrase": "as it happens", "z": 4.0, "pairs": 100},
             {"phrase": "as it", "z": 4.0, "pairs": 100},
             {"phrase": "the saying goes", "z": -3.0, "pairs": 50},
             {"phrase": "saying", "z": -3.0, "pairs": 50},
             {"phrase": "blue", "z": 2.0, "pairs": 30}]
    assert [m["phrase"] for m in merge_phrases(cands)] == ["as it happens", "the saying goes", "blue"]
    # opposite signs never merge; a longer phrase that holds few of the pairs does not replace the short one
    assert [m["phrase"] for m in merge_phrases([{"phrase": "sure", "z": 5.0, "pairs": 400},
                                                {"phrase": "sure thing", "z": 4.0, "pairs": 20},
                                                {"phrase": "not sure", "z": -4.0, "pairs": 30}])] == \
        ["sure", "not sure"]


def test_tarone_counts_only_the_buckets_that_can_reach_significance():
    # a sign test on n pairs cannot go below 2 * 0.5^n: at alpha 0.01, with 3 buckets, n = 11 gives 9.8e-4 <= 0.01 / 3
    assert tarone_tests(np.array([11, 11, 11]), alpha=0.01) == 3
    # 1,000 buckets seen in 2 pairs can never be significant and must not dilute the test of the 3 frequent ones
    assert tarone_tests(np.array([40, 30, 20] + [2] * 1000), alpha=0.01) == 3
    # 100 buckets seen in 9 pairs: 2 * 0.5^9 = 0.0039 > 0.01 / 4, so K = 4 testable ones do not include them
    assert tarone_tests(np.array([40, 30, 20, 15] + [9] * 100), alpha=0.01) == 4


def test_buckets_are_the_vectorizers_own():
    x = vectorizer().transform(["as it happens"])
    assert sorted(x.indices.tolist()) == sorted(bucket_of(vectorizer().build_analyzer()("as it happens")).tolist())


def test_prompt_blind_features_never_see_the_prompt():
    prompts = ["what colour is the circle", "describe the picture"]
    chosen, rejected = ["the circle is red", "a dog"], ["it is blue", "a cat"]
    blind = pair_features(prompts, chosen, rejected, with_prompt=False)
    other = pair_features(["completely different words here", "x y z"], chosen, rejected, with_prompt=False)
    assert (blind != other).nnz == 0
    aware = pair_features(prompts, chosen, rejected, with_prompt=True)
    assert aware.shape[1] == 2 * blind.shape[1] and aware[:, blind.shape[1]:].nnz > 0


def test_prompt_blind_stack_reads_no_prompt(tmp_path):
    """The same pairs under other (still distinct) prompts: the prompt-blind margins are the same to the
    last bit, while the prompt-aware ones move; every component and the blind stacker never read it."""
    pairs = list(generate("leadin", 240, seed=3))
    out = {}
    for name, prompt in (("a", lambda i, p: f"{p.prompt} ({i})"), ("b", lambda i, p: f"tell me number {i} please")):
        rows = [{"prompt": prompt(i, p), "chosen": p.chosen, "rejected": p.rejected, "image": f"none/{i}.png",
                 "sample_id": f"s{i}"} for i, p in enumerate(pairs)]
        (tmp_path / f"{name}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
        score(ScoreConfig(source=tmp_path / f"{name}.jsonl", out=tmp_path / name, text_only=True, folds=3,
                          stack="tokens,lexical,cue", cache_dir=tmp_path / "cache"))
        out[name] = pl.read_parquet(tmp_path / name / "audited.parquet")
    assert out["a"]["fold"].to_list() == out["b"]["fold"].to_list()
    assert out["a"]["prompt_blind_margin"].to_list() == out["b"]["prompt_blind_margin"].to_list()
    assert out["a"]["text_margin"].to_list() != out["b"]["text_margin"].to_list()


def test_lexical_text_probe_loads_no_encoder_and_text_only_scores_rows_without_images(tmp_path, monkeypatch):
    import audit.encoders.text as text_encoders

    def refuse(*a, **k):
        raise AssertionError("a text encoder was loaded")

    monkeypatch.setattr(text_encoders, "load_text_encoder", refuse)
    rows = [{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected, "image": f"nowhere/{i}.png"}
            for i, p in enumerate(generate("aside", 400, seed=4))]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    s = score(ScoreConfig(source=tmp_path / "d.jsonl", out=tmp_path / "audit", text_only=True, text_probe="lexical",
                          cache_dir=tmp_path / "cache"))
    assert s["text_only"] and s["sfc_kind"] == "text-only" and s["n_scored"] == 400
    assert s["scored_without_image"] == 400 and s["mm_acc"] is None and s["sfd"] is None
    assert s["phrases"][0]["phrase"] == "as it happens" and s["text_acc"] > 0.8
    assert s["probes"]["text"] == "lexical" and [c["name"] for c in s["text_components"]] == ["lexical"]
    df = pl.read_parquet(tmp_path / "audit" / "audited.parquet")
    assert df["status"].unique().to_list() == ["image_missing"]
    assert df["sfc"].null_count() == 400 and df["mm_prob"].null_count() == 400
    assert df["text_prob"].null_count() == 0 and df["weight"].mean() == pytest.approx(1.0)


def test_text_only_refuses_sfc_schemes_and_multimodal_options(tmp_path):
    from audit.errors import ConfigError

    with pytest.raises(ConfigError, match="text-only audit has no SFC"):
        ScoreConfig(source=tmp_path, out=tmp_path / "a", text_only=True, scheme="sfc-residual")
    with pytest.raises(ConfigError, match="--text-only"):
        ScoreConfig(source=tmp_path, out=tmp_path / "a", text_only=True, mm_scores="a,b")


def test_app_phrase_filter_keeps_pairs_with_the_phrase_on_one_side(aside):
    from pathlib import Path

    from audit.appdata import Audit, Filters, word_diff_html

    audit = Audit(Path(aside["config"]["out"]))
    f = Filters(phrase="as it happens")
    n = audit.count(f)
    top = aside["phrases"][0]
    assert n == top["n_chosen"] + top["n_rejected"]
    assert Filters.from_params(f.to_params()) == f
    _, cho = word_diff_html("The box is red.", "The box, as it happens, is red.", highlight=["as it happens"])
    assert cho.count("<mark") == 3 and "box" in cho and "<mark" not in word_diff_html("a", "b")[1]


def test_aside_environment_depends_only_on_the_seed():
    a = [p.chosen for p in generate("aside", 20, seed=2)]
    assert a == [p.chosen for p in generate("aside", 20, seed=2)]
    assert np.mean(["as it happens" in c for c in a]) > 0.5


def test_one_sided_phrases_lead_and_function_words_are_listed_apart(tmp_path):
    """300 constructed pairs: the chosen answer is the longer one (its clauses are joined by "and", so
    "and" sits on the chosen side whenever one side has it), "in the scene" is planted on the chosen side
    of 60 pairs and "adding to the" on the rejected side of 50. The planted phrases top the list with
    their exact counts; "and", a length proxy, is not among the phrases."""
    rng = np.random.default_rng(0)
    vocab = [f"zq{i}x" for i in range(400)]

    def answer(clauses: int) -> str:
        return " and ".join(" ".join(rng.choice(vocab, 5)) for _ in range(clauses)) + "."

    rows = []
    for i in range(300):
        c, r = answer(int(rng.integers(2, 5))), answer(1)
        if i < 60:
            c = "In the scene " + c
        elif i < 110:
            r = r[:-1] + ", adding to the " + " ".join(rng.choice(vocab, 2)) + "."
        rows.append({"sample_id": f"r{i}", "prompt": f"question {i}", "chosen": c, "rejected": r, "image": f"x/{i}.png"})
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    s = score(ScoreConfig(source=tmp_path / "d.jsonl", out=tmp_path / "a", text_only=True, text_probe="lexical",
                          folds=3, cache_dir=tmp_path / "c"))
    top = {p["phrase"]: p for p in s["phrases"][:2]}
    assert set(top) == {"in the scene", "adding to the"}
    assert (top["in the scene"]["n_chosen"], top["in the scene"]["n_rejected"]) == (60, 0)
    assert (top["adding to the"]["n_chosen"], top["adding to the"]["n_rejected"]) == (0, 50)
    assert all(p["significant"] for p in top.values()) and top["adding to the"]["z"] < 0 < top["in the scene"]["z"]
    assert "and" not in {p["phrase"] for p in s["phrases"]}
    assert not any(p["significant"] for p in s["phrases"][2:])     # random words: nothing else stands out
    assert all(p["function_word"] for p in s["function_words"])
