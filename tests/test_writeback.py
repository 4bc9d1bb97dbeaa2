"""Copies written back in the source's own format (`export --format source`, `overlap --exclude`): a kept
record comes back as it was read, with its own picture, and ingesting the copy gives the same pairs
with the same preference; in every format, with ties, multi-completion records and duplicate ids."""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit.config import IngestConfig
from audit.ingest import ingest
from audit.sources import rlaif_v, rlhf_v, trl, vl_rewardbench
from audit.sources.readers import iter_records, locate
from audit.sources.writers import write_hf_folder, write_json_array, write_jsonl, write_parquet
from conftest import png_bytes

ASPECTS = ("Helpfulness", "Ethical Considerations", "Visual Faithfulness")
TEXTS = ("Yes.", "A red square on a white ground.", "Two dogs play in the snow.", "It is a cat.", "  ")
PROMPTS = ("What is shown?", "Describe the picture.")


def _picture(k: int) -> bytes:
    return png_bytes(((37 * k) % 256, (91 * k) % 256, (53 * k + 20) % 256))


def _turns(prompt, answer):
    return [{"from": "human", "value": f"<image>\n{prompt}"}, {"from": "gpt", "value": answer}]


def _msgs(role, text):
    return [{"role": role, "content": [{"type": "text", "text": text}]}]


def _single(fmt: str, r: dict, root: Path) -> dict:
    """One record of a one-pair format: `r` has id, prompt, a (preferred), b, picture, path."""
    png, path = _picture(r["picture"]), f"pics/{r['picture']}.png"
    if fmt in ("povid", "alignrm", "pairs"):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(png)
    image = {"bytes": png, "path": None}
    return {
        "rlaif-v": lambda: {"ds_name": "RLAIF-V", "image": image, "question": r["prompt"], "chosen": r["a"],
                            "rejected": r["b"], "idx": r["id"]},
        "rlhf-v": lambda: {"ds_name": "RLHF-V", "image": image, "idx": r["n"],
                           "text": json.dumps({"question": r["prompt"], "chosen": r["a"], "rejected": r["b"]})},
        "povid": lambda: {"id": r["id"], "image": path, "conversations": _turns(r["prompt"], r["a"]),
                          "rejected_conversations": _turns(r["prompt"], r["b"])},
        "trl": lambda: {"prompt": _msgs("user", r["prompt"]), "chosen": _msgs("assistant", r["a"]),
                        "rejected": _msgs("assistant", r["b"]), "images": [image]},
        "vl-rewardbench": lambda: {"id": r["id"], "query": r["prompt"], "image": image, "models": ["m1", "m2"],
                                   "response": [r["a"], r["b"]] if r["first"] else [r["b"], r["a"]],
                                   "human_ranking": [0, 1] if r["first"] else [1, 0], "human_error_analysis": ["x"]},
        "alignrm": lambda: {"id": r["id"], "prompt": r["prompt"], "img_path": path, "chosen": r["a"], "rejected": r["b"]},
        "pairs": lambda: {"sample_id": r["id"], "prompt": r["prompt"], "chosen": r["a"], "rejected": r["b"], "image": path},
    }[fmt]()


def _vlfeedback(r: dict, root: Path) -> dict:
    comps = [{"annotations": {a: {"Rating": str(v), "Rationale": f"{a} of {m}"} for a, v in zip(ASPECTS, rating)},
              "model": m, "response": text} for m, text, rating in r["completions"]]
    rec = {"id": r["id"], "prompt": r["prompt"], "models": [c["model"] for c in comps], "completions": comps}
    path = f"merged_images/{r['id']}.jpg" if r["implicit"] else f"pics/{r['picture']}.png"
    if r["implicit"] and (root / path).exists():
        pass              # records sharing an id share `merged_images/{id}.jpg`
    else:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(_picture(r["picture"]))
    if not r["implicit"]:
        rec["img_path"] = path
    return rec


SPECS = {"rlaif-v": rlaif_v.SPEC, "rlhf-v": rlhf_v.SPEC, "trl": trl.SPEC, "vl-rewardbench": vl_rewardbench.SPEC}
FORMATS = ["vlfeedback", "rlaif-v", "rlhf-v", "povid", "trl", "trl-hf", "vl-rewardbench", "alignrm", "pairs",
           "pairs-json"]


def _write_source(fmt: str, recs: list[dict], root: Path) -> Path:
    base = fmt.split("-hf")[0].replace("pairs-json", "pairs")
    rows = [_vlfeedback(r, root) if base == "vlfeedback" else _single(base, r, root) for r in recs]
    if fmt == "trl-hf":
        return write_hf_folder(rows, root / "trl_dataset", SPECS["trl"])
    if base in SPECS:
        return write_parquet(rows, root / "data" / "train-00000-of-00001.parquet", SPECS[base])
    if fmt in ("povid", "pairs-json"):
        return write_json_array(rows, root / "data.json")
    return write_jsonl(rows, root / "data.jsonl")


ids = st.sampled_from(["r1", "r2", "r3"])           # few ids: records share them
completion = st.tuples(st.sampled_from(["gpt4v", "llava", "fuyu"]), st.sampled_from(TEXTS),
                       st.tuples(*[st.integers(3, 5)] * 3))        # narrow ratings: ties are common


@st.composite
def records(draw, fmt: str):
    out = []
    for n in range(draw(st.integers(1, 5))):
        r = {"n": n, "id": draw(ids), "prompt": draw(st.sampled_from(PROMPTS)), "picture": draw(st.integers(0, 3))}
        if fmt == "vlfeedback":
            r.update(completions=draw(st.lists(completion, min_size=2, max_size=4)), implicit=draw(st.booleans()))
        else:
            r.update(a=draw(st.sampled_from(TEXTS)), b=draw(st.sampled_from(TEXTS)), first=draw(st.booleans()))
        out.append(r)
    return out


def _ingest(src: Path, out: Path) -> pl.DataFrame:
    ingest(IngestConfig(source=src, out=out))
    return pl.read_parquet(out / "pairs.parquet")


WRITABLE = ("ok", "duplicate")
KEY = ["prompt", "chosen", "rejected", "image_id"]


def _pairs(df: pl.DataFrame, swap: np.ndarray | None = None) -> Counter:
    rows = df.select(KEY).rows()
    if swap is not None:
        rows = [(p, r, c, i) if s else (p, c, r, i) for (p, c, r, i), s in zip(rows, swap)]
    return Counter(rows)


@pytest.mark.parametrize("fmt", FORMATS)
@settings(max_examples=6, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_ingest_write_back_ingest_is_the_identity(fmt, data):
    """Everything written back: the same pairs, rows and records in order; a random part written back,
    some swapped: exactly those pairs (swapped ones reversed), each once, with their own pictures."""
    from audit.sources.writeback import write_back

    recs = data.draw(records("vlfeedback" if fmt == "vlfeedback" else fmt))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        src = _write_source(fmt, recs, tmp / "src")
        one = _ingest(src, tmp / "p1")
        writable = one["status"].is_in(WRITABLE).to_numpy()
        every = np.flatnonzero(writable)
        if not len(every):
            return          # nothing to write (every pair empty or identical)
        write_back(one, every, writable, tmp / "p1", tmp / "all")
        two = _ingest(tmp / "all", tmp / "p2")
        ok = pl.col("status") == "ok"
        assert two.filter(ok).select(*KEY, "margin").equals(one.filter(ok).select(*KEY, "margin"))
        kept = set(one.filter(pl.Series(writable))["source_record"].to_list())
        originals = [r for i, r in enumerate(iter_records(locate(src))) if i in kept]
        assert list(iter_records(locate(tmp / "all"))) == originals      # the records as read

        rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
        part = every[rng.random(len(every)) < 0.6]
        if not len(part):
            return
        swap = rng.random(len(part)) < 0.3
        write_back(one, part, writable, tmp / "p1", tmp / "part", swap=swap)
        three = _ingest(tmp / "part", tmp / "p3")
        assert _pairs(three.filter(pl.col("status").is_in(WRITABLE))) == _pairs(one[part], swap)


# ---- VLFeedback copies (`overlap --exclude`): whole records, their own pictures, partial records -------------

MODELS = ("gpt4v", "llava", "fuyu", "qwen")


def _vlf_set(root: Path, colours: int = 0) -> Path:
    """12 records of 4 rated completions (6 pairs each, no ties); records 3 and 4 share the id `dup` and
    name their own pictures, the others are `merged_images/{id}.jpg`."""
    recs = []
    for i in range(12):
        rid = "dup" if i in (3, 4) else f"rec-{i}"
        comps = [{"annotations": {a: {"Rating": str(5 - k if a != "Ethical Considerations" else 5),
                                      "Rationale": f"{m} on {a.lower()}, record {i}"} for a in ASPECTS},
                  "model": m, "response": f"Answer {k} of {m} to record {i}: the shape has colour number {k}."}
                 for k, m in enumerate(MODELS)]
        rec = {"id": rid, "prompt": f"Question {i}: what is drawn here?", "models": list(MODELS), "completions": comps}
        path = f"shots/{i}/dup.png" if rid == "dup" else f"merged_images/{rid}.jpg"
        if rid == "dup":
            rec["img_path"] = path
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(_picture(i + 20 * colours))
        recs.append(rec)
    return write_jsonl(recs, root / "vlfeedback_80k.jsonl")


def _unrelated(root: Path, chosen: str = "A plain grey square sits in the middle of it.") -> Path:
    (root / "a.png").parent.mkdir(parents=True, exist_ok=True)
    (root / "a.png").write_bytes(png_bytes((3, 250, 7), size=(12, 12)))
    return write_jsonl([{"prompt": "Which shape is it, please?", "img_path": "a.png", "chosen": chosen,
                         "rejected": "It is a circle, drawn in thick red lines."}], root / "a.jsonl")


def _excluded(tmp_path: Path, a: Path, b: Path, out: str = "ov") -> dict:
    from audit.config import OverlapConfig
    from audit.overlap import overlap

    return overlap(OverlapConfig(a=a, b=b, out=tmp_path / out, exclude=True))["excluded"]


def _records(path) -> list[dict]:
    return list(iter_records(locate(Path(path))))


def test_vlfeedback_copy_is_each_record_as_read(tmp_path):
    src = _vlf_set(tmp_path / "b")
    ex = _excluded(tmp_path, _unrelated(tmp_path / "a"), src)
    assert _records(ex["path"]) == _records(src)       # 4 completions, models, rationales, per-aspect ratings
    assert ex["rows_out"] == 72 and ex["records_out"] == 12
    back = _ingest(Path(ex["path"]).parent, tmp_path / "back")
    one = pl.read_parquet(tmp_path / "ov" / "pairs" / "b" / "pairs.parquet")
    assert back.select(*KEY, "margin").equals(one.select(*KEY, "margin"))


def test_records_sharing_an_id_keep_their_own_pictures(tmp_path):
    src = _vlf_set(tmp_path / "b")
    ex = _excluded(tmp_path, _unrelated(tmp_path / "a"), src)
    copy = Path(ex["path"]).parent
    dups = [r for r in _records(ex["path"]) if r["id"] == "dup"]
    assert [(copy / r["img_path"]).read_bytes() for r in dups] == [_picture(3), _picture(4)]
    assert (copy / "merged_images" / "rec-0.jpg").read_bytes() == _picture(0)


def test_a_rerun_into_the_same_folder_writes_this_runs_pictures(tmp_path):
    a = _unrelated(tmp_path / "a")
    _excluded(tmp_path, a, _vlf_set(tmp_path / "b1"))
    ex = _excluded(tmp_path, a, _vlf_set(tmp_path / "b2", colours=1))       # same ids and names, new pictures
    copy = Path(ex["path"]).parent
    assert (copy / "merged_images" / "rec-0.jpg").read_bytes() == _picture(20)
    assert [(copy / r["img_path"]).read_bytes() for r in _records(ex["path"]) if r["id"] == "dup"] == \
        [_picture(23), _picture(24)]


def test_a_partly_kept_vlfeedback_record_comes_back_with_the_completions_of_its_kept_pairs(tmp_path):
    src = _vlf_set(tmp_path / "b")
    shared = _records(src)[0]["completions"][1]["response"]          # A holds one answer of record 0
    ex = _excluded(tmp_path, _unrelated(tmp_path / "a", chosen=shared), src)
    assert ex["rows_out"] == 72 - 3 and ex["removed"] == 3           # the 3 pairs with that answer
    recs, orig = _records(ex["path"]), _records(src)
    assert recs[1:] == orig[1:]
    assert recs[0]["models"] == ["gpt4v", "fuyu", "qwen"]
    assert recs[0]["completions"] == [orig[0]["completions"][k] for k in (0, 2, 3)]
    back = _ingest(Path(ex["path"]).parent, tmp_path / "back")
    assert shared not in back["chosen"].to_list() + back["rejected"].to_list() and back.height == 69


def test_pairs_left_out_of_a_record_never_come_back():
    """A > B > C with A-B and B-C kept and A-C left out: no one copy of the record can hold both kept
    pairs without A-C, so it comes back as two records, each kept pair once."""
    from audit.sources.vlfeedback import VLFeedback

    fmt = VLFeedback()
    rec = {"id": "x", "prompt": "Q?", "completions": [
        {"annotations": {"Helpfulness": {"Rating": str(r), "Rationale": m}}, "model": m, "response": f"answer {m}"}
        for m, r in (("A", 5), ("B", 4), ("C", 3))]}
    items = list(fmt.to_pairs(rec, 0))
    ab, ac, bc = (k for k, it in enumerate(items) if it.parts in ((0, 1), (0, 2), (1, 2)))
    out = fmt.write_back(rec, 0, {ab: {"weight": 2.0}, bc: {"weight": 0.5}}, set(), {ac})
    got = [(p.chosen, p.rejected, p.extra.get("weight")) for r in out for p in fmt.to_pairs(r, 0)]
    assert sorted(got) == [("answer A", "answer B", 2.0), ("answer B", "answer C", 0.5)]
    swapped = fmt.write_back(rec, 0, {ac: {}}, {ac}, None)
    assert [(p.chosen, p.rejected) for r in swapped for p in fmt.to_pairs(r, 0)] == [("answer C", "answer A")]


# ---- VL-RewardBench copies (`export --format source`): responses and rankings as read ----------------------

@pytest.fixture(scope="module")
def vlrb(tmp_path_factory):
    from audit.config import ScoreConfig
    from audit.score import score

    root = tmp_path_factory.mktemp("vlrb")
    rows = []
    for i in range(40):
        good, bad = f"Shape {i} is a red square with a thin black border.", f"Shape {i} is a green circle."
        first = i % 3 != 0
        rows.append({"id": f"q{i}", "query": f"What is shape {i}?", "response": [good, bad] if first else [bad, good],
                     "image": {"bytes": png_bytes((6 * i, 255 - 6 * i, 90), size=(16, 16)), "path": None},
                     "human_ranking": [0, 1] if first else [1, 0], "models": [f"m{i}", "other"],
                     "human_error_analysis": ["hallucination"] if i % 2 else [], "query_source": "RLAIF-V"})
    write_parquet(rows, root / "src" / "data" / "test-00000-of-00001.parquet", vl_rewardbench.SPEC)
    score(ScoreConfig(source=root / "src", out=root / "audit", cache_dir=root / "cache"))
    return root


def test_vl_rewardbench_copy_keeps_every_record_and_preference(vlrb, tmp_path):
    from audit.config import ExportConfig
    from audit.export import export

    rep = export(ExportConfig(audit=vlrb / "audit", out=tmp_path / "x", format="source"))
    assert rep["written_as"] == "vl-rewardbench" and rep["rows_out"] == 40
    copy = _records(tmp_path / "x")
    orig = _records(vlrb / "src")
    # the records as read (lists stay lists, the ranking goes with its own responses), plus the weights
    assert [{k: v for k, v in r.items() if k not in ("weight", "audit_weight")} for r in copy] == orig
    back = _ingest(tmp_path / "x", tmp_path / "back")
    assert (back["status"] == "ok").all()
    one = pl.read_parquet(vlrb / "audit" / "audited.parquet")
    assert back.select(KEY).equals(one.select(KEY))
    assert back["weight"].to_list() == pytest.approx(one["weight"].to_list())


def test_a_swapped_pair_comes_back_reversed_in_a_source_copy(vlrb, tmp_path):
    from audit.config import ExportConfig
    from audit.export import export
    from audit.tags import set_tags

    audit = tmp_path / "audit"
    import shutil

    shutil.copytree(vlrb / "audit", audit)
    one = pl.read_parquet(audit / "audited.parquet")
    set_tags(audit, one["pair_id"][:4].to_list(), "swap")
    set_tags(audit, one["pair_id"][4:6].to_list(), "exclude")
    export(ExportConfig(audit=audit, out=tmp_path / "x", format="source", tags=True))
    copy, orig = _records(tmp_path / "x"), _records(vlrb / "src")
    assert [r["id"] for r in copy] == [r["id"] for r in orig[:4] + orig[6:]]
    assert [r["human_ranking"] for r in copy[:4]] == [[1 - x for x in r["human_ranking"]] for r in orig[:4]]
    assert [r["response"] for r in copy[:4]] == [r["response"] for r in orig[:4]]
    back = _ingest(tmp_path / "x", tmp_path / "back")
    flipped = one[:4].select("prompt", pl.col("rejected").alias("chosen"), pl.col("chosen").alias("rejected"), "image_id")
    assert back.select(KEY).equals(pl.concat([flipped, one[6:].select(KEY)]))


def test_a_copy_keeps_the_sources_own_column_names_and_points_at_its_own_pictures(tmp_path):
    """`--columns` renames only for reading: the copy has the source's names. A picture named by an
    absolute path is copied inside the copy's folder and the record points at it there."""
    from audit.sources.writeback import write_back

    root = tmp_path / "src"
    for i in range(3):
        (root / "p" / f"{i}.png").parent.mkdir(parents=True, exist_ok=True)
        (root / "p" / f"{i}.png").write_bytes(_picture(i))
    rows = [{"question": f"What is {i}?", "good": f"It is number {i}.", "bad": f"It is number {i + 1}.",
             "img": str((root / "p" / "0.png").resolve()) if i == 0 else f"p/{i}.png", "note": i} for i in range(3)]
    src = write_jsonl(rows, root / "mine.jsonl")
    columns = "prompt=question,chosen=good,rejected=bad,image=img"
    ingest(IngestConfig(source=src, out=tmp_path / "p1", columns=columns))
    one = pl.read_parquet(tmp_path / "p1" / "pairs.parquet")
    every = np.ones(one.height, bool)
    write_back(one, np.arange(one.height), every, tmp_path / "p1", tmp_path / "copy")
    copy = _records(tmp_path / "copy" / "mine.jsonl")
    assert [list(r) for r in copy] == [list(r) for r in rows] and copy[1:] == rows[1:]
    assert copy[0]["img"] == f"images/{one['image_id'][0]}.png"
    assert (tmp_path / "copy" / copy[0]["img"]).read_bytes() == _picture(0)
    ingest(IngestConfig(source=tmp_path / "copy", out=tmp_path / "p2", columns=columns))
    assert pl.read_parquet(tmp_path / "p2" / "pairs.parquet").select(KEY).equals(one.select(KEY))
