"""Each real source schema, built by hand from ../shared/reference/datasets.md, with exact counts."""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import jpeg_bytes, png_bytes, run_ingest, write_jsonl


def _anno(h, e, v):
    return {"Helpfulness": {"Rating": h, "Rationale": "r"},
            "Ethical Considerations": {"Rating": e, "Rationale": "r"},
            "Visual Faithfulness": {"Rating": v, "Rationale": "r"}}


# A (5,5,5)=5.0, B (3,5,4)=4.0, C has "N/A", D (4,5,3)=4.0 (ties with B).
# Candidates: AB -> A wins by 1; AC unparsable; AD -> A wins by 1; BC unparsable; BD tie; CD unparsable.
COMPLETIONS = [
    {"annotations": _anno("5", "5", "5"), "model": "gpt4v", "response": "He holds a dark umbrella 【3†source】."},
    {"annotations": _anno("3", "5", "4"), "model": "llava", "response": "He holds a bag."},
    {"annotations": _anno("N/A", "5", "5"), "model": "fuyu", "response": "He holds a phone."},
    {"annotations": _anno("4", "5", "3"), "model": "qwen", "response": "He holds a cup."},
]


def _vlf_root(tmp_path, rec_id="svit-conversation-1219"):
    img = tmp_path / "merged_images" / f"{rec_id}.jpg"
    img.parent.mkdir(parents=True)
    img.write_bytes(jpeg_bytes())
    return img


@pytest.mark.parametrize("layout", ["raw", "hf"])
def test_vlfeedback_pairs_by_mean_rating(tmp_path, layout):
    img = _vlf_root(tmp_path)
    comps = COMPLETIONS if layout == "raw" else {k: [c[k] for c in COMPLETIONS] for k in ("annotations", "model", "response")}
    rec = {"id": "svit-conversation-1219", "prompt": "What is the man holding?", "models": ["gpt4v", "llava", "fuyu", "qwen"],
           "completions": comps}
    if layout == "raw":
        src = write_jsonl(tmp_path / "vlfeedback_80k.jsonl", [rec])
    else:  # the HF layout: columnar completions and an added img_path
        rec["img_path"] = str(img)
        src = tmp_path / "vlf.parquet"
        pq.write_table(pa.Table.from_pylist([rec]), src)
    rep, df = run_ingest(src, tmp_path / "out")
    assert rep["format"] == "vlfeedback"
    assert rep["rows_out"] == 2 and rep["pairs_ok"] == 2
    assert rep["not_paired"] == {"rating_unparsable": 3, "tie": 1}
    assert rep["comparisons"] == 6
    rows = df.sort("rejected").to_dicts()
    assert [r["chosen"] for r in rows] == [COMPLETIONS[0]["response"]] * 2
    assert sorted(r["rejected"] for r in rows) == ["He holds a bag.", "He holds a cup."]
    assert [r["margin"] for r in rows] == [1.0, 1.0]
    assert {r["chosen_model"] for r in rows} == {"gpt4v"}
    # Six pairs of VLFeedback share one image: it is one id and one file.
    assert df["image_id"].n_unique() == 1
    assert df["image_id"][0] == hashlib.sha256(img.read_bytes()).hexdigest()[:32]


def test_vlfeedback_missing_aspect_is_counted_not_a_crash(tmp_path):
    _vlf_root(tmp_path, "x1")
    comps = [dict(c) for c in COMPLETIONS[:2]] + [{"annotations": {"Helpfulness": {"Rating": "2", "Rationale": ""},
                                                                   "Ethical Considerations": None},
                                                   "model": "m", "response": "He holds a kite."}]
    src = write_jsonl(tmp_path / "v.jsonl", [{"id": "x1", "prompt": "What?", "completions": comps},
                                             {"id": "x2", "prompt": "Solo", "completions": comps[:1]}])
    rep, df = run_ingest(src, tmp_path / "out")
    # AB is a pair; A-C and B-C lack aspects of C; the one-completion row makes no comparison.
    assert rep["rows_out"] == 1
    assert rep["not_paired"] == {"rating_missing": 2, "too_few_completions": 1}


def test_rlaif_v_embedded_image_stored_once(tmp_path):
    img = png_bytes()
    rows = [{"ds_name": "RLAIF-V", "image": {"bytes": img, "path": "a.png"}, "question": f"Q{i}?",
             "chosen": "A small harbor.", "rejected": "A busy city.", "origin_dataset": "OKVQA",
             "origin_split": "{}", "idx": f"OKVQA-{i}", "image_path": "okvqa/x.jpg"} for i in range(3)]
    src = tmp_path / "RLAIF-V-Dataset_000.parquet"
    pq.write_table(pa.Table.from_pylist(rows), src)
    rep, df = run_ingest(src, tmp_path / "out")
    assert rep["format"] == "rlaif-v" and rep["pairs_ok"] == 3
    assert df["sample_id"].to_list() == ["OKVQA-0", "OKVQA-1", "OKVQA-2"]
    assert df["src_image_path"].to_list() == ["okvqa/x.jpg"] * 3   # the source's column, renamed
    assert rep["images"]["stored_new"] == 1
    stored = tmp_path / "out" / df["image_path"][0]
    assert stored.read_bytes() == img


def test_rlhf_v_text_json(tmp_path):
    text = json.dumps({"question": "What is the woman doing?", "chosen": "Slicing tomatoes.",
                       "rejected": "Slicing tomatoes while a cat watches."})
    rows = [{"ds_name": "RLHF-V-Hall_v1", "image": {"bytes": png_bytes(), "path": None}, "text": text,
             "origin_dataset": "VQAv2", "origin_split": "{}", "idx": 42, "image_path": "v/1.jpg"},
            {"ds_name": "RLHF-V-Hall_v1", "image": {"bytes": png_bytes(), "path": None}, "text": "{\"question\": broken",
             "origin_dataset": "VQAv2", "origin_split": "{}", "idx": 43, "image_path": "v/2.jpg"}]
    src = tmp_path / "RLHF-V-Dataset.parquet"
    pq.write_table(pa.Table.from_pylist(rows), src)
    rep, df = run_ingest(src, tmp_path / "out", format="rlhf-v")
    assert rep["rows_out"] == 2
    good, bad = df.sort("sample_id").to_dicts()
    assert (good["prompt"], good["chosen"], good["status"]) == ("What is the woman doing?", "Slicing tomatoes.", "ok")
    assert bad["status"] == "bad_row" and "`text`" in bad["status_detail"]


def test_povid_strips_image_token_and_resolves_basename(tmp_path):
    (tmp_path / "train2014").mkdir()
    (tmp_path / "train2014" / "COCO_train2014_000000123456.jpg").write_bytes(jpeg_bytes())
    human = {"from": "human", "value": "<image>\nDescribe this image in detail."}
    recs = [{"id": "COCO_train2014_000000123456", "image": "./data/coco/COCO_train2014_000000123456.jpg",
             "conversations": [human, {"from": "gpt", "value": "A red bus."}],
             "rejected_conversations": [human, {"from": "gpt", "value": "A red bus and a dog."}]}]
    src = tmp_path / "povid.json"
    src.write_text(json.dumps(recs))
    rep, df = run_ingest(src, tmp_path / "out", image_root=tmp_path / "train2014")
    row = df.row(0, named=True)
    assert rep["format"] == "povid"
    assert (row["prompt"], row["chosen"], row["rejected"], row["status"]) == (
        "Describe this image in detail.", "A red bus.", "A red bus and a dog.", "ok")
    assert row["image_path"].endswith("train2014/COCO_train2014_000000123456.jpg")


def test_trl_conversational_with_null_text_items(tmp_path):
    rec = {"images": [{"bytes": png_bytes(), "path": None}],
           "prompt": [{"role": "user", "content": [{"type": "image", "text": None},
                                                   {"type": "text", "text": "What color is the square?"}]}],
           "chosen": [{"role": "assistant", "content": [{"type": "text", "text": "It is black."}]}],
           "rejected": [{"role": "assistant", "content": [{"type": "text", "text": "It is bright yellow."}]}]}
    src = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist([rec, {**rec, "images": []}]), src)
    rep, df = run_ingest(src, tmp_path / "out")
    assert rep["format"] == "trl"
    assert df["prompt"].to_list() == ["What color is the square?"] * 2
    assert df["chosen"][0] == "It is black." and df["rejected"][0] == "It is bright yellow."
    assert df["status"].to_list() == ["ok", "image_missing"]   # `images: []` is a text-only row


def test_vl_rewardbench_human_ranking(tmp_path):
    base = {"query": "Describe the table.", "image": {"bytes": png_bytes(), "path": None}, "models": [],
            "judge": "gpt-4o", "rationale": "", "meta": "{}", "human_error_analysis": [], "ground_truth": ""}
    rows = [{**base, "id": "RLAIF-V-val-1", "response": ["A laptop.", "A laptop and tulips."],
             "human_ranking": [0, 1], "query_source": "RLAIF-V"},
            {**base, "id": "hallucination-2", "response": ["A vase.", "A mug."], "human_ranking": [1, 0],
             "query_source": "  "},
            {**base, "id": "x-3", "response": ["A.", "B."], "human_ranking": [0, 0], "query_source": "COCO"}]
    src = tmp_path / "data" / "test-00000-of-00001.parquet"
    src.parent.mkdir()
    pq.write_table(pa.Table.from_pylist(rows), src)
    rep, df = run_ingest(tmp_path, tmp_path / "out")
    rows = df.to_dicts()
    assert rep["format"] == "vl-rewardbench" and rep["rows_out"] == 3
    assert (rows[0]["chosen"], rows[0]["rejected"]) == ("A laptop.", "A laptop and tulips.")
    assert (rows[1]["chosen"], rows[1]["rejected"]) == ("A mug.", "A vase.")
    assert rows[1]["query_source_norm"] == "unknown" and rows[0]["query_source_norm"] == "rlaif-v"
    assert rows[2]["status"] == "bad_row" and "human_ranking" in rows[2]["status_detail"]


def test_alignrm_pairwise_jsonl(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(png_bytes())
    src = write_jsonl(tmp_path / "pairs.jsonl", [
        {"id": "", "prompt": "What are the key features?", "img_path": "imgs/a.png", "chosen": "x", "rejected": "y"}])
    rep, df = run_ingest(src, tmp_path / "out")
    assert rep["format"] == "alignrm"
    assert df["status"].to_list() == ["ok"] and df["sample_id"].to_list() == ["row0"]


@pytest.mark.parametrize("container", ["jsonl", "json", "parquet", "hf"])
def test_generic_pairs_with_column_mapping(tmp_path, container):
    (tmp_path / "a.png").write_bytes(png_bytes())
    rows = [{"q": f"Question {i}?", "good": "Right.", "bad": f"Wrong {i}.", "pic": "a.png", "margin": 0.5} for i in range(4)]
    if container == "jsonl":
        src = write_jsonl(tmp_path / "d.jsonl", rows)
    elif container == "json":
        src = tmp_path / "d.json"
        src.write_text(json.dumps(rows))
    elif container == "parquet":
        src = tmp_path / "d.parquet"
        pq.write_table(pa.Table.from_pylist(rows), src)
    else:
        import datasets

        src = tmp_path / "hf"
        datasets.Dataset.from_list(rows).save_to_disk(str(src))
    rep, df = run_ingest(src, tmp_path / "out", columns="prompt=q,chosen=good,rejected=bad,image=pic",
                         image_root=tmp_path)
    assert rep["format"] == "pairs" and rep["pairs_ok"] == 4
    assert df["prompt"].to_list() == [f"Question {i}?" for i in range(4)]
    assert df["margin"].to_list() == [0.5] * 4


def test_hf_datasetdict_folder_keeps_split(tmp_path):
    import datasets

    (tmp_path / "a.png").write_bytes(png_bytes())
    mk = lambda n: datasets.Dataset.from_list([{"prompt": f"p{i}", "chosen": "c", "rejected": "r", "image": "a.png"} for i in range(n)])
    datasets.DatasetDict({"train": mk(3), "test": mk(2)}).save_to_disk(str(tmp_path / "dd"))
    rep, df = run_ingest(tmp_path / "dd", tmp_path / "out", image_root=tmp_path)
    assert rep["rows_out"] == 5
    assert sorted(df["split"].to_list()) == ["test", "test", "train", "train", "train"]
    # Same texts and image in train and test: the second copy of each is a duplicate.
    assert df.filter(df["status"] == "duplicate").height == 2


def test_reingest_pairs_folder_is_stable(tmp_path):
    src = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "p", "chosen": "c", "rejected": "r", "image": "a.png"}])
    (tmp_path / "a.png").write_bytes(png_bytes())
    _, first = run_ingest(src, tmp_path / "p1")
    _, second = run_ingest(tmp_path / "p1", tmp_path / "p2")
    cols = ["pair_id", "prompt", "chosen", "rejected", "image_id", "status"]
    assert first.select(cols).to_dicts() == second.select(cols).to_dicts()
    assert second["source"].to_list() == ["pairs"]
