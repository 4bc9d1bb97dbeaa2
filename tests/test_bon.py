"""Best-of-N: the exact estimators against enumeration (ties included), RewardBench 2's best-of-4 rule,
the exact synthetic curve against a sampled pool, a cue-only reward model in the adverse regime, the
candidates file (`synth --candidates`), its reader's statuses and `eval --best-of-n` end to end."""

from __future__ import annotations

import itertools
import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from audit.bon.estimators import (agreement, grouped_mean_ci, kl_bon, pool_curve, subset_pick, support_kl,
                                  support_pick, win_best, win_random)
from audit.cli import main
from audit.config import EvalConfig
from audit.errors import ConfigError


# ---- the estimators, by enumeration -------------------------------------------------------------------

def _enumerate_subsets(s, g, b, n):
    """Every n-subset of the pool, the pick uniform among the tied top scores: exact fractions of
    (pick probability per candidate, win_best, agreement with scorer b)."""
    m = len(s)
    pick, wb, ag, count = [Fraction(0)] * m, Fraction(0), Fraction(0), 0
    for sub in itertools.combinations(range(m), n):
        count += 1
        top = [i for i in sub if s[i] == max(s[j] for j in sub)]
        top_b = [i for i in sub if b[i] == max(b[j] for j in sub)]
        for y in top:
            pick[y] += Fraction(1, len(top))
            if g[y] == max(g[j] for j in sub):
                wb += Fraction(1, len(top))
            if y in top_b:
                ag += Fraction(1, len(top) * len(top_b))
    return [float(p / count) for p in pick], float(wb / count), float(ag / count)


def test_subset_estimator_by_hand_with_a_tie():
    # pool of 4, n = 2, six subsets: {0,1} tie (gold 1 or 0: 1/2), {0,2} picks 0 (gold 1), the other four pick
    # a gold-0 answer: 1.5 / 6 = 0.25. An estimator that breaks the tie by position (argmax) would say 2/6.
    s, g = np.array([1.0, 1.0, 0.0, 2.0]), np.array([1.0, 0.0, 1.0, 0.0])
    assert subset_pick(s, 2) @ g == pytest.approx(0.25, abs=1e-12)
    assert subset_pick(s, 2).tolist() == pytest.approx([1.5 / 6, 1.5 / 6, 0.0, 3 / 6])
    assert subset_pick(s, 9).tolist() == pytest.approx([0, 0, 0, 1])        # n >= M: the whole pool


def test_subset_estimators_equal_brute_force_enumeration_on_small_pools_with_ties():
    rng = np.random.default_rng(7)
    for _ in range(40):
        m = int(rng.integers(2, 9))
        s, g, b = (rng.integers(0, 3, m).astype(float) for _ in range(3))    # three values: many ties
        for n in range(1, m + 1):
            pick, wb, ag = _enumerate_subsets(s, g, b, n)
            assert subset_pick(s, n).tolist() == pytest.approx(pick, abs=1e-10)
            assert win_best(s, g, n) == pytest.approx(wb, abs=1e-10)
            assert agreement(s, b, n) == pytest.approx(ag, abs=1e-10)
            c = pool_curve(s, g, [n])
            best = _enumerate_subsets(g, g, g, n)[0]                          # the perfect picker
            assert c["oracle"][0] == pytest.approx(np.dot(best, g), abs=1e-10)
            beats = np.array([(g < gy).mean() + 0.5 * (g == gy).mean() for gy in g])
            assert c["win_random"][0] == pytest.approx(np.dot(pick, beats), abs=1e-10)


def test_support_estimator_equals_enumeration_of_draws():
    """n i.i.d. draws from p over a support with ties: every one of the K^n draws enumerated."""
    s = np.array([0.3, 1.0, 1.0, -2.0, 0.3])
    p = np.array([0.1, 0.2, 0.3, 0.25, 0.15])
    for n in (1, 2, 3, 4):
        want = np.zeros(len(s))
        for draw in itertools.product(range(len(s)), repeat=n):
            prob = np.prod(p[list(draw)])
            top = [i for i in draw if s[i] == max(s[j] for j in draw)]
            for i in top:
                want[i] += prob / len(top)
        got = support_pick(s, p, [n])[0]
        assert got.tolist() == pytest.approx(want.tolist(), abs=1e-12)
        on = want > 0
        assert support_kl(got[None], p)[0] == pytest.approx(float(np.sum(want[on] * np.log(want[on] / p[on]))))
    untied = np.array([0.1, 0.5, 0.9, -1.0, 2.0])
    for n in (2, 8, 64):       # without ties the exact KL is at most log n - (n-1)/n (Beirami et al.)
        assert support_kl(support_pick(untied, p, [n]), p)[0] <= kl_bon(n) + 1e-12
    assert kl_bon(1) == 0.0 and kl_bon(64) == pytest.approx(np.log(64) - 63 / 64)


def test_rewardbench2_best_of_4_rule_is_selected_at_n_equal_4():
    """RewardBench 2 (`reroll_and_score_dataset`): 1 / #ties when the first (correct) completion holds
    the maximum score, else 0; our expected gold of the pick at n = M = 4 is that number."""
    rows = [[3.0, 1.0, 2.0, 0.0], [1.0, 3.0, 2.0, 0.0], [2.0, 2.0, 1.0, 0.0], [2.0, 2.0, 2.0, 2.0],
            [0.5, 0.5, 1.0, 0.5]]
    gold = np.array([1.0, 0.0, 0.0, 0.0])
    for scores in rows:
        sc = np.array(scores)
        rb2 = (1 / np.sum(sc == sc.max())) if sc[0] == sc.max() else 0.0
        assert subset_pick(sc, 4) @ gold == pytest.approx(rb2)
    assert [subset_pick(np.array(r), 4) @ gold for r in rows] == pytest.approx([1.0, 0.0, 0.5, 0.25, 0.0])


def test_grouped_interval_resamples_whole_groups():
    v = np.array([[1.0], [1.0], [0.0], [0.0]])
    lo, hi = grouped_mean_ci(v, np.array(["a", "a", "b", "b"]), rounds=200)
    assert lo[0] == 0.0 and hi[0] == 1.0                                 # two groups: all of one or the other, or both
    assert grouped_mean_ci(v, np.array(["a"] * 4)) is None


# ---- the synthetic world --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bon_set():
    from audit.bon.synthetic import build_bon_set

    return build_bon_set("leadin", 60, 64, 4096)


def _styled_scores(bs) -> np.ndarray:
    """A scorer that sees the picture a little and the cue a lot (the shortcut), plus per-text noise."""
    noise = np.random.default_rng(3).normal(0, 1, len(bs.correct))
    return 1.0 * bs.correct + 2.5 * bs.cued + noise


def test_a_cue_only_reward_model_dips_below_random_in_the_adverse_regime(bon_set):
    from audit.bon.synthetic import curve_metrics, exact_curves

    curves = exact_curves(bon_set.cued.astype(float), bon_set)   # the cue and nothing else
    adverse = curves["adverse"]
    assert adverse["gold"][0] == pytest.approx(0.5)                       # n = 1: the policy's own rate
    assert adverse["gold"][adverse["n"].index(64)] == pytest.approx(0.25, abs=1e-3)   # P(right | cue) = 0.25
    assert np.all(np.diff(adverse["gold"]) <= 1e-12)                      # every extra candidate makes it worse
    assert curves["aligned"]["gold"][6] == pytest.approx(0.75, abs=1e-3)  # the same model, the cue on right answers
    assert curves["clean"]["gold"] == pytest.approx([0.5] * len(curves["clean"]["n"]))   # no cue: a random pick
    m = curve_metrics(adverse)
    assert m["lure64"] == pytest.approx(0.75, abs=1e-3) and m["peak_n"] == 1
    assert m["drop"] == pytest.approx(0.25, abs=1e-3)


def test_the_exact_curve_lies_inside_the_interval_of_a_sampled_pool(bon_set):
    """Draw a pool of 64 from the adverse policy per prompt, estimate best-of-n on it with the subset
    estimator (unbiased for n <= 64), and check the exact curve of the same scorer against its grouped
    99% interval (seven correlated checks). The shortcut scorer rises at n = 2, then falls below a
    random pick: over-optimisation."""
    from audit.bon.synthetic import exact_curves

    scores = _styled_scores(bon_set)
    exact = exact_curves(scores, bon_set, ns=(1, 2, 4, 8, 16, 32, 64))["adverse"]
    rng = np.random.default_rng(11)
    ns, per_prompt = [1, 2, 4, 8, 16, 32, 64], []
    for g in range(len(bon_set.offsets) - 1):
        sl = slice(bon_set.offsets[g], bon_set.offsets[g + 1])
        pool = rng.choice(sl.stop - sl.start, size=64, p=bon_set.probs["adverse"][sl])
        per_prompt.append(pool_curve(scores[sl][pool], bon_set.correct[sl][pool].astype(float), ns)["selected"])
    lo, hi = grouped_mean_ci(np.array(per_prompt), np.arange(len(per_prompt)), rounds=2000, level=0.99)
    assert np.all(lo <= np.array(exact["gold"])) and np.all(np.array(exact["gold"]) <= hi), (lo, exact["gold"], hi)
    gold = exact["gold"]                                                   # rises at n = 2, then the lure wins
    assert gold[1] > gold[0] + 0.03 and min(gold[3:6]) < gold[1] - 0.05 and min(gold[3:6]) < 0.5


def test_candidates_file_follows_the_regime_and_repeats_exactly(tmp_path):
    from audit.config import SynthConfig
    from audit.synth import synth

    paths = [synth(SynthConfig(env="leadin", n=150, candidates=40, seed=1, out=tmp_path / f"c{k}", container="jsonl"))
             for k in (0, 1)]
    assert paths[0].read_bytes() == paths[1].read_bytes()                 # same seed, same bytes
    rows = [json.loads(line) for line in paths[0].read_text().splitlines()]
    correct = np.concatenate([r["correct"] for r in rows])
    cued = np.concatenate([r["cued"] for r in rows])
    assert len(rows) == 150 and all(len(r["responses"]) == 40 for r in rows)
    assert abs(cued.mean() - 0.2) < 0.02 and abs(correct.mean() - 0.5) < 0.02
    assert abs(correct[cued].mean() - 0.25) < 0.03                        # adverse: the cue mostly on wrong answers
    assert all(r["responses"][i].startswith(("Great question", "Certainly", "Sure thing", "Happy to help")) == c
               for r in rows for i, c in enumerate(r["cued"]))
    assert (tmp_path / "c0" / rows[0]["image"]).is_file()
    with pytest.raises(ConfigError, match="--candidates"):
        SynthConfig(env="leadin", candidates=4, format="vlfeedback", out=tmp_path / "x")


# ---- the reader and the command -----------------------------------------------------------------------

def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_reader_gives_every_row_a_status(tmp_path):
    from audit.bon.candidates import read_candidates

    good = {"prompt": "q", "responses": ["a", "b", "c"], "gold": [1, 0, 2], "rm": [0.1, 0.2, 0.3]}
    rows = [good, "{not json", {"responses": ["a", "b"], "gold": [1, 0], "rm": [1, 2]},
            {**good, "responses": ["only"], "gold": [1], "rm": [1]}, {**good, "gold": [1, 0]},
            {**good, "gold_best": 5, "gold": None}, {**good, "rm": [1, 2]}, {**good, "rm": [1, float("nan"), 2]},
            {"prompt": "q", "responses": ["a", 3], "gold": [1, 0], "rm": [1, 2]}, {**good, "gold": None, "id": "g9"}]
    src = _write_jsonl(tmp_path / "c.jsonl", rows)          # json writes the NaN as `NaN`, which it reads back
    c = read_candidates(src, tmp_path / "w", score_cols=["rm"])
    assert [s["status"] for s in c.statuses] == [
        "ok", "bad_row", "missing_field", "too_few_candidates", "gold_length_mismatch", "bad_gold",
        "score_length_mismatch", "score_not_finite", "bad_text", "gold_missing"]
    assert len(c.statuses) == len(rows) and len(c.groups) == 1 and c.gold == "gold"
    assert c.groups[0].gold.tolist() == [1.0, 0.0, 2.0] and c.statuses[-1]["group_id"] == "g9"
    long = _write_jsonl(tmp_path / "l.jsonl", [
        {"group_id": "a", "prompt": "p", "response": "x", "score": 1, "correct": True},
        {"group_id": "b", "prompt": "p", "response": "y", "score": 2, "correct": False},
        {"group_id": "a", "prompt": "p", "response": "z", "score": 0, "correct": False},
        {"group_id": "b", "prompt": "other", "response": "w", "score": 3, "correct": True}])
    c = read_candidates(long, tmp_path / "w2", score_cols=["score"])
    assert c.layout == "long"
    assert [s["status"] for s in c.statuses] == ["ok", "inconsistent_group", "ok", "inconsistent_group"]
    assert c.groups[0].responses == ["x", "z"] and c.groups[0].gold.tolist() == [1.0, 0.0]


def test_eval_best_of_n_on_score_columns_reproduces_rewardbench2_and_the_cue_dip(tmp_path, capsys):
    """RewardBench-2-like rows (`chosen` / `rejected` lists) scored by a column: selected at n = 4 is the
    mean of RB2's per-row rule; a `cued` column used as a reward model dips below random on an adverse
    candidates file."""
    rb2 = [{"prompt": "q", "chosen": ["good"], "rejected": ["b1", "b2", "b3"], "s": s}
           for s in ([3, 1, 2, 0], [1, 3, 2, 0], [2, 2, 1, 0], [2, 2, 2, 2])]
    src = _write_jsonl(tmp_path / "rb2.jsonl", rb2)
    assert main(["eval", "--best-of-n", str(src), "--candidate-scores", "s", "--ns", "1,4",
                 "-o", str(tmp_path / "r.json")]) == 0
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["best_of_n"]["gold"] == "chosen/rejected"
    assert res["scorers"]["s"]["selected"]["mean"] == pytest.approx([0.25, (1 + 0 + 0.5 + 0.25) / 4])
    assert (tmp_path / "r.md").read_text().startswith("# Best-of-N")
    from audit.config import SynthConfig
    from audit.synth import synth

    path = synth(SynthConfig(env="closing", n=120, candidates=32, out=tmp_path / "adv", container="parquet"))
    import polars as pl

    t = pl.read_parquet(path)
    cue_rm = pl.col("cued").list.eval(pl.element().cast(pl.Float64)).alias("cue_rm")     # scores the cue alone
    t.with_columns(cue_rm).write_parquet(tmp_path / "s.parquet")
    assert main(["eval", "--best-of-n", str(tmp_path / "s.parquet"), "--candidate-scores", "cue_rm", "--ns", "1,32",
                 "-o", str(tmp_path / "adv.json")]) == 0
    e = json.loads((tmp_path / "adv.json").read_text())["scorers"]["cue_rm"]
    assert e["selected"]["ci"][1][1] < e["random"]["mean"][1]             # n = 32: below random, interval included
    assert e["style"]["drift"]["closing"]["mean"][1] > 0.6                # the pick carries the cue
    capsys.readouterr()


def test_eval_best_of_n_with_runs_blank_and_picks(tmp_path, capsys):
    """Two tiny `small` runs through the command: the fast path's rewards equal the model's own forward;
    --blank reports how often the pick survives; --export-picks writes one file per run; bad options
    are one Error line."""
    import torch

    from audit.bon.score import image_array, small_rewards, token_ids
    from audit.config import SynthConfig, TrainConfig
    from audit.synth import synth
    from audit.train.loop import CHECKPOINT, load_model, train

    data = synth(SynthConfig(env="leadin", n=60, out=tmp_path / "train"))
    runs = []
    for seed in (0, 1):
        train(TrainConfig(data=data.parent, out=tmp_path / f"run{seed}", epochs=1, vision="scratch", seed=seed,
                          batch_size=32, threads=1))
        runs.append(str(tmp_path / f"run{seed}"))
    cands = synth(SynthConfig(env="leadin", n=12, candidates=6, out=tmp_path / "cands", container="jsonl"))
    argv = ["eval", *runs, "--best-of-n", str(cands), "--ns", "1,2,6,8", "--blank", "--export-picks",
            str(tmp_path / "picks"), "-o", str(tmp_path / "bon.json")]
    assert main(argv) == 0
    res = json.loads((tmp_path / "bon.json").read_text())
    assert list(res["scorers"]) == ["run0", "run1"] and res["best_of_n"]["short_groups"] == [0, 0, 0, 12]
    e = res["scorers"]["run0"]
    assert e["blind_agreement"]["mean"][0] == pytest.approx(1.0) and 0 <= e["blind_agreement"]["mean"][2] <= 1
    assert e["selected"]["mean"][2] == pytest.approx(e["selected"]["mean"][3])   # n > M: all M candidates
    assert "run1" in res["paired"]
    picks = [json.loads(x) for x in (tmp_path / "picks" / "run0.jsonl").read_text().splitlines()]
    assert len(picks) == 12 and picks[0]["response"] in json.loads(cands.read_text().splitlines()[0])["responses"]
    # the fast path's rewards are the model's own forward pass, response by response
    model = load_model(Path(runs[0]) / CHECKPOINT)
    row = json.loads(cands.read_text().splitlines()[0])
    img = torch.from_numpy(image_array((cands.parent / row["image"]).read_bytes(), 64))[None]
    prompt, responses = token_ids([row["prompt"]], 4096), token_ids(row["responses"], 4096)
    fast = small_rewards(model, img, prompt, responses, np.zeros(6, int))
    with torch.no_grad():
        slow = model(img.float().expand(6, -1, -1, -1) / 255.0, prompt.expand(6, -1), responses)
    assert fast == pytest.approx(slow.double().numpy(), abs=1e-5)
    assert max(picks[0]["score"], *fast) == pytest.approx(picks[0]["score"], abs=1e-5)
    capsys.readouterr()
    assert main(["eval", "--best-of-n", str(cands)]) == 1
    assert capsys.readouterr().err.startswith("Error: `eval --best-of-n CANDIDATES` needs a reward model to rank with")
    assert main(["eval", runs[0], "--best-of-n", str(cands), "--ns", "0,4"]) == 1
    assert "`--ns` must be whole numbers of at least 1" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="--blank"):
        EvalConfig(best_of_n=cands, candidate_scores="x", blank=True)


def test_eval_best_of_n_scores_with_a_vlm_reward_model(tmp_path):
    """A tiny randomly initialised Qwen2-VL reward model, loaded by path: the same scorer `score --rm` uses."""
    from audit.bon.evaluate import eval_best_of_n
    from audit.config import SynthConfig
    from audit.synth import synth
    from audit.tiny import tiny_qwen2_vl

    rm = tiny_qwen2_vl(tmp_path / "qwen")
    cands = synth(SynthConfig(env="leadin", n=4, candidates=3, out=tmp_path / "c", container="parquet"))
    res = eval_best_of_n(EvalConfig(run=rm, best_of_n=cands, ns="1,3", blank=True, device="cpu"))
    e = res["scorers"]["qwen"]
    assert e["kind"] == "run" and len(e["selected"]["mean"]) == 2 and 0.0 <= e["blind_agreement"]["mean"][1] <= 1.0


def test_the_curve_diff_script_pairs_each_run_with_standard_of_its_environment_and_seed(tmp_path):
    """benchmarks/bon_curve_diffs.py: per n, method minus `standard` of the same (environment, seed), pooled
    over the cue environments of one strength; an unpaired run is left out, never matched to another."""
    import importlib.util
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("bon_curve_diffs", root / "benchmarks" / "bon_curve_diffs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ns = [1, 2, 4]

    def row(env, seed, method, gold):
        curve = {"n": ns, "gold": gold, "lure": [0.2, 0.2, 0.2]}
        return {"train_env": env, "n_train": 100, "seed": seed, "method": method, "bon": {"adverse": curve}}

    rows = []
    for env, base in (("leadin", 0.5), ("closing", 0.4)):
        for seed in (0, 1):
            rows += [row(env, seed, "standard", [0.5, base, base - 0.1]),
                     row(env, seed, "weighted-debias", [0.5, base + 0.1 * (seed + 1), base])]
    rows.append(row("verbose", 0, "weighted-debias", [0.5, 0.9, 0.9]))     # no standard run to pair with
    res = mod.curve_diffs(rows, ["adverse"])
    e = res["all cues at p=0.9 (n=100)"]["regimes"]["adverse"]["weighted-debias"]
    assert e["runs"] == 4 and e["gold_diff"] == pytest.approx([0.0, 0.15, 0.1])
    lo, hi = e["gold_diff_ci"][1]
    assert 0.1 - 1e-9 <= lo < 0.15 < hi <= 0.2 + 1e-9
    md = mod.markdown(res, ("weighted-debias",))
    assert "| Δ weighted-debias | 0 | +15.0 [" in md and "+10.0 [+10.0, +10.0] |" in md
    tasks = tmp_path / "bench" / "tasks"
    tasks.mkdir(parents=True)
    (tasks / "all.json").write_text(json.dumps({"rows": rows}))
    out = subprocess.run([sys.executable, str(root / "benchmarks" / "bon_curve_diffs.py"), str(tmp_path / "bench"),
                          "--regimes", "adverse", "--results", str(tmp_path / "r.json")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Δ weighted-debias" in out.stdout and json.loads((tmp_path / "r.json").read_text())["tasks"] == 1
