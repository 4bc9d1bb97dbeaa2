"""The bad-input catalogue: a clear error for a bad source, a status for a bad row, rows in = rows out."""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from audit.cli import main
from conftest import noisy_jpeg, png_bytes, read_pairs, run_ingest, write_jsonl


def _pair(i=0, **kw):
    return {"prompt": f"What is shown {i}?", "chosen": "A red square.", "rejected": "A blue circle.", "image": "a.png", **kw}


@pytest.fixture
def root(tmp_path):
    (tmp_path / "a.png").write_bytes(png_bytes())
    return tmp_path


def _cli_error(capsys, args) -> str:
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error: "), err   # one line, no traceback
    return err[0]


# ---- errors for the whole source -------------------------------------------------------------

def test_missing_file(tmp_path, capsys):
    err = _cli_error(capsys, ["ingest", str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "o")])
    assert err == (f"Error: `{tmp_path / 'nope.jsonl'}` does not exist; pass a data file (.jsonl, .json, .parquet, "
                   ".arrow) or a folder (HF save_to_disk, shards, a pairs folder)")


def test_unsupported_file_type(tmp_path, capsys):
    (tmp_path / "d.csv").write_text("a,b\n")
    err = _cli_error(capsys, ["ingest", str(tmp_path / "d.csv"), "-o", str(tmp_path / "o")])
    assert "unsupported file type `.csv`" in err


def test_file_that_is_not_parquet(tmp_path, capsys):
    (tmp_path / "d.parquet").write_bytes(b"this is not parquet at all")
    err = _cli_error(capsys, ["ingest", str(tmp_path / "d.parquet"), "-o", str(tmp_path / "o")])
    assert f"`{tmp_path / 'd.parquet'}` is not a readable Parquet file" in err


def test_unknown_format(root, capsys):
    write_jsonl(root / "d.jsonl", [{"foo": 1, "bar": 2}])
    err = _cli_error(capsys, ["ingest", str(root / "d.jsonl"), "-o", str(root / "o")])
    assert err.startswith(f"Error: `{root / 'd.jsonl'}`: unknown format (columns: `foo`, `bar`); pass `--format`")


def test_ambiguous_format(root, capsys):
    rec = {"conversations": [], "rejected_conversations": [], "query": "q", "response": ["a", "b"], "human_ranking": [0, 1]}
    write_jsonl(root / "d.jsonl", [rec])
    err = _cli_error(capsys, ["ingest", str(root / "d.jsonl"), "-o", str(root / "o")])
    assert "ambiguous format, the record matches `povid`, `vl-rewardbench`" in err and "pass `--format`" in err


def test_missing_required_column_detected(root, capsys):
    write_jsonl(root / "d.jsonl", [{"prompt": "p", "chosen": "c", "image": "a.png"}])
    err = _cli_error(capsys, ["ingest", str(root / "d.jsonl"), "-o", str(root / "o")])
    assert "looks like format `pairs` but column `rejected` is missing" in err
    assert "`--columns rejected=YOUR_COLUMN`" in err


def test_missing_required_column_forced_format(root, capsys):
    write_jsonl(root / "d.jsonl", [_pair()])
    err = _cli_error(capsys, ["ingest", str(root / "d.jsonl"), "--format", "rlaif-v", "-o", str(root / "o")])
    assert err == (f"Error: `{root / 'd.jsonl'}`: format `rlaif-v` needs column `question`, not found (columns: "
                   "`prompt`, `chosen`, `rejected`, `image`); map it with `--columns question=YOUR_COLUMN` "
                   "or pick another `--format`")


def test_unknown_format_name(root, capsys):
    write_jsonl(root / "d.jsonl", [_pair()])
    err = _cli_error(capsys, ["ingest", str(root / "d.jsonl"), "--format", "csv", "-o", str(root / "o")])
    assert err == ("Error: unknown format `csv`; valid: vlfeedback, rlaif-v, rlhf-v, povid, trl, vl-rewardbench, "
                   "alignrm, pairs")


def test_bad_columns_option(root, capsys):
    write_jsonl(root / "d.jsonl", [_pair()])
    err = _cli_error(capsys, ["ingest", str(root / "d.jsonl"), "--columns", "prompt", "-o", str(root / "o")])
    assert err == "Error: `--columns` entry 'prompt' is not CANON=SRC; write e.g. `--columns prompt=question,chosen=good`"


def test_json_that_is_not_json(root, capsys):
    (root / "d.json").write_text("[{\"prompt\": ")
    err = _cli_error(capsys, ["ingest", str(root / "d.json"), "-o", str(root / "o")])
    assert f"`{root / 'd.json'}` is not valid JSON" in err


# ---- bad rows get a status; the run goes on ---------------------------------------------------

def _statuses(rep, df):
    assert rep["records_in"] == rep["rows_out"] == df.height   # rows in = rows out
    return df["status"].to_list()


def test_broken_lines_and_non_objects(root):
    src = write_jsonl(root / "d.jsonl", [_pair(0), "{not json", "[1, 2]", _pair(1)])
    with open(src, "ab") as fh:
        fh.write(b'{"prompt": "\xff\xfe"}\n')
    rep, df = run_ingest(src, root / "o")
    assert _statuses(rep, df) == ["ok", "bad_row", "bad_row", "ok", "bad_row"]
    details = df["status_detail"].to_list()
    assert details[1].startswith("d.jsonl:2: line is not valid JSON")
    assert details[2] == "d.jsonl:3: line is a JSON list, expected an object"
    assert "not valid UTF-8" in details[4]
    assert df["pair_id"].n_unique() == 5


def test_mixed_formats_in_one_file(root):
    # AlignRM's loader silently drops later rows' completions here (from_list takes the first row's keys).
    vlf = {"id": "v1", "prompt": "p", "completions": [{"annotations": {}, "model": "m", "response": "x"}] * 2}
    src = write_jsonl(root / "d.jsonl", [_pair(0, img_path="a.png"), vlf, _pair(1, img_path="a.png")])
    rep, df = run_ingest(src, root / "o")
    assert rep["format"] == "alignrm"
    assert _statuses(rep, df) == ["ok", "bad_row", "ok"]
    assert df["status_detail"][1] == "record looks like format `vlfeedback`, not `alignrm`: the file mixes formats"


def test_non_string_text_empty_and_identical(root):
    src = write_jsonl(root / "d.jsonl", [_pair(0, chosen=5), _pair(1, rejected=["a", "b"]), _pair(2, chosen="  "),
                                         _pair(3, rejected="A red square. "), {"chosen": "c", "rejected": "r", "prompt": None,
                                                                               "image": "a.png"}])
    rep, df = run_ingest(src, root / "o")
    assert _statuses(rep, df) == ["bad_text", "bad_text", "empty_response", "identical_responses", "missing_field"]
    assert df["status_detail"][0] == "`chosen` is a int, expected text"


def test_one_megabyte_response_is_kept_whole(root):
    big = "word " * 210_000
    rep, df = run_ingest(write_jsonl(root / "d.jsonl", [_pair(0, chosen=big)]), root / "o")
    assert _statuses(rep, df) == ["ok"]
    assert df["chosen"][0] == big and len(big) > 1_000_000


def test_unicode_right_to_left_and_lone_surrogates(root):
    rows = [_pair(0, prompt="ما هذا الشكل؟", chosen="מרובע אדום 🟥", rejected="Ein blauer Kreis — ∅"),
            json.dumps(_pair(1, chosen="bad \ud800 surrogate"))]   # JSON escapes allow lone surrogates
    rep, df = run_ingest(write_jsonl(root / "d.jsonl", rows), root / "o")
    assert _statuses(rep, df) == ["ok", "ok"]
    assert df.row(0, named=True)["prompt"] == "ما هذا الشكل؟"
    assert df.row(0, named=True)["chosen"] == "מרובע אדום 🟥"
    assert df["chosen"][1] == "bad \ufffd surrogate"


def test_duplicate_rows(root):
    rows = [_pair(0), _pair(1), _pair(0), _pair(0, id="other-id")]
    rep, df = run_ingest(write_jsonl(root / "d.jsonl", rows), root / "o")
    assert _statuses(rep, df) == ["ok", "ok", "duplicate", "duplicate"]
    assert rep["duplicates"] == 2
    assert df["pair_id"].n_unique() == 4     # ids stay unique: content hash + occurrence number


def test_paths_that_escape_the_root_are_refused(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.png").write_bytes(png_bytes())
    (tmp_path / "secret.png").write_bytes(png_bytes((1, 2, 3)))
    os.symlink(tmp_path / "secret.png", root / "link.png")
    os.symlink(root / "a.png", root / "inner-link.png")
    rows = [_pair(0), _pair(1, image="../secret.png"), _pair(2, image=str(tmp_path / "secret.png")),
            _pair(3, image="link.png"), _pair(4, image="inner-link.png"), _pair(5, image="missing.png")]
    rep, df = run_ingest(write_jsonl(root / "d.jsonl", rows), tmp_path / "o")
    assert _statuses(rep, df) == ["ok", "image_outside_root", "image_outside_root", "image_outside_root", "ok", "image_missing"]
    assert f"pass `--image-root {tmp_path.resolve()}`" in df["status_detail"][1]
    assert df["image_path"][1] is None


def test_truncated_jpeg_and_garbage_image(root):
    data = noisy_jpeg()
    (root / "trunc.jpg").write_bytes(data[: len(data) // 2])
    (root / "junk.png").write_bytes(b"definitely not an image")
    rows = [_pair(0, image="trunc.jpg"), _pair(1, image="junk.png"), _pair(2)]
    rep, df = run_ingest(write_jsonl(root / "d.jsonl", rows), root / "o")
    assert _statuses(rep, df) == ["image_corrupt", "image_corrupt", "ok"]
    # `header` mode reads only the header: faster, and it misses truncation (documented).
    rep, df = run_ingest(write_jsonl(root / "d.jsonl", rows), root / "o2", verify_images="header")
    assert _statuses(rep, df) == ["ok", "image_corrupt", "ok"]


def _png_bomb(width=100_000, height=100_000) -> bytes:
    """A tiny PNG whose header declares a huge canvas."""
    raw = png_bytes(size=(1, 1))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return raw[:8] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + raw[8 + 25:]


def test_png_bomb_is_refused_without_decoding(root):
    (root / "bomb.png").write_bytes(_png_bomb())
    rows = [_pair(0, image="bomb.png"), _pair(1)]
    rep, df = run_ingest(write_jsonl(root / "d.jsonl", rows), root / "o")
    assert _statuses(rep, df) == ["image_too_large", "ok"]
    # Embedded bytes go through the same check.
    table = pa.Table.from_pylist([{**_pair(0), "image": {"bytes": _png_bomb(5000, 5000), "path": None}}])
    pq.write_table(table, root / "e.parquet")
    rep, df = run_ingest(root / "e.parquet", root / "o2", max_pixels=1_000_000)
    assert _statuses(rep, df) == ["image_too_large"]
    assert "declares 5000x5000" in df["status_detail"][0]


def test_broken_json_array_tail(root):
    text = json.dumps([_pair(0), _pair(1)])
    (root / "d.json").write_text(text[:-30])   # cut inside the second element
    rep, df = run_ingest(root / "d.json", root / "o")
    assert _statuses(rep, df) == ["ok", "bad_row"]
    assert "the JSON array ends inside this element (file truncated?)" in df["status_detail"][1]


def test_broken_element_in_a_json_array_costs_one_row_not_the_rest(root):
    """A POVID-style array with one broken element at index 100 of 300 used to ingest 101 records and
    exit 0: the 199 after it were gone."""
    elems = [json.dumps(_pair(i)) for i in range(300)]
    elems[100] = '{"prompt": "broken", "chosen": , "rejected": "x"}'
    elems[200] = '{"prompt": "unbalanced \\"quote, "chosen": "a", "rejected": "b"}'   # an unclosed string
    (root / "d.json").write_text("[\n" + ",\n".join(elems) + "\n]\n")
    rep, df = run_ingest(root / "d.json", root / "o")
    st = _statuses(rep, df)
    assert len(st) == 300 and st.count("ok") == 298
    assert st[100] == st[200] == "bad_row" and "read on from the next element" in df["status_detail"][100]
    assert df["prompt"][299] == "What is shown 299?"


def test_a_record_nested_a_thousand_levels_deep_is_a_bad_row(root):
    """`ingest` stopped with a RecursionError traceback on one record nested 1,000 levels deep."""
    deep = '{"a": ' * 1000 + '"x"' + "}" * 1000
    rec = json.dumps(_pair(1))[:-1] + ', "meta": ' + deep + "}"
    lines = [json.dumps(_pair(0)), rec, json.dumps(_pair(2))]
    (root / "d.jsonl").write_text("\n".join(lines) + "\n")
    (root / "d.json").write_text("[" + ",\n".join(lines) + "]")
    (root / "one.json").write_text(rec)
    for name, where in (("d.jsonl", "d.jsonl:2"), ("d.json", "d.json[1]"), ("one.json", "one.json:1")):
        rep, df = run_ingest(root / name, root / name.replace(".", "_"), format="pairs")
        st = _statuses(rep, df)
        bad = st.index("bad_row")
        assert st.count("bad_row") == 1 and len(st) == len(lines if name != "one.json" else [rec])
        assert df["status_detail"][bad].startswith(f"{where}: ") and "nested deeper than the JSON parser" in \
            df["status_detail"][bad]


def test_stray_brackets_in_a_json_array_never_hang_or_end_it_early(root):
    """A bit flip that starts an element with `}` used to loop forever; a stray `]` ended the array
    there and dropped every record after it."""
    elems = [json.dumps(_pair(i)) for i in range(6)]
    elems[2] = "}" + elems[2][1:]
    (root / "d.json").write_text("[" + ", ".join(elems[:4]) + "], " + ", ".join(elems[4:]) + "]")
    rep, df = run_ingest(root / "d.json", root / "o")
    st = _statuses(rep, df)
    assert rep["records_in"] == rep["rows_out"] == 7 and st.count("ok") == 5
    assert "closes early" in df["status_detail"][4] and df["prompt"][6] == "What is shown 5?"


@pytest.mark.parametrize("kind", ["jsonl", "json"])
def test_utf8_byte_order_mark_is_accepted(root, kind):
    rows = [_pair(i) for i in range(3)]
    text = "\n".join(json.dumps(r) for r in rows) if kind == "jsonl" else json.dumps(rows)
    (root / f"d.{kind}").write_bytes(b"\xef\xbb\xbf" + text.encode())
    rep, df = run_ingest(root / f"d.{kind}", root / "o")
    assert _statuses(rep, df) == ["ok"] * 3


def test_empty_source_file(root, capsys):
    (root / "d.jsonl").write_text("\n\n")
    err = _cli_error(capsys, ["ingest", str(root / "d.jsonl"), "-o", str(root / "o")])
    assert "the source holds no records" in err


def test_outputs_are_replaced_atomically(root):
    src = write_jsonl(root / "d.jsonl", [_pair(0), _pair(1)])
    run_ingest(src, root / "o")
    before = (root / "o" / "pairs.parquet").read_bytes()
    marker = (root / "o" / ".shortcut-audit.json").read_bytes()
    write_jsonl(root / "d.jsonl", [{"foo": 1}])
    with pytest.raises(Exception):
        run_ingest(src, root / "o", overwrite=True)
    # A failed replacement leaves the previous output intact (its marker too) and no temporary files behind.
    assert (root / "o" / "pairs.parquet").read_bytes() == before
    assert (root / "o" / ".shortcut-audit.json").read_bytes() == marker
    assert sorted(p.name for p in (root / "o").iterdir() if p.name.startswith(".")) == [
        ".shortcut-audit.json", ".shortcut-audit.lock"]
    assert read_pairs(root / "o").height == 2


def test_json_array_with_many_elements_streams(root):
    rows = [_pair(i) for i in range(3000)]
    (root / "d.json").write_text(json.dumps(rows, indent=1))
    rep, df = run_ingest(root / "d.json", root / "o")
    assert rep["rows_out"] == 3000 and df["prompt"][2999] == "What is shown 2999?"


def test_output_inside_the_source_folder_is_not_read_back(root):
    write_jsonl(root / "d.jsonl", [_pair(0), _pair(1)])
    run_ingest(root, root / "pairs")
    rep, _ = run_ingest(root, root / "pairs", overwrite=True)
    assert rep["files"] == [str(root / "d.jsonl")] and rep["rows_out"] == 2


# ---- safety: numbers, pickles, names from the data, file modes -----------------------------------

@pytest.mark.parametrize("args,expected", [
    (["--batch-size", "-5"], "Error: `--batch-size` must be at least 1, got -5"),
    (["--batch-size", "0"], "Error: `--batch-size` must be at least 1, got 0"),
    (["--max-length", "0"], "Error: `--max-length` must be at least 8, got 0"),
    (["--threshold", "nan"], "Error: `--threshold` must be a finite number, got nan"),
])
def test_score_refuses_numeric_options_out_of_range_before_any_work(root, capsys, args, expected):
    """`--batch-size -5` used to exit 0 with all-zero embeddings (and cache them)."""
    write_jsonl(root / "d.jsonl", [_pair(i) for i in range(4)])
    assert _cli_error(capsys, ["score", str(root / "d.jsonl"), "-o", str(root / "a"), *args]) == expected
    assert not (root / "a").exists()


def test_every_numeric_option_of_every_command_declares_its_range():
    import dataclasses
    import typing

    from audit import config

    for name in dir(config):
        cls = getattr(config, name)
        if not (dataclasses.is_dataclass(cls) and name.endswith("Config")):
            continue
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if config._base_type(hints[f.name]) in (int, float):
                assert f.metadata.get("bounds"), f"{name}.{f.name} declares no valid range"


def test_train_and_bench_numbers_are_validated_in_the_python_api_too(tmp_path):
    from audit.config import BenchConfig, TrainConfig
    from audit.errors import ConfigError

    with pytest.raises(ConfigError, match=r"`--lr` must be above 0, got -0.1"):
        TrainConfig(data=tmp_path, out=tmp_path / "r", lr=-0.1)
    with pytest.raises(ConfigError, match=r"`--epochs` must be a finite integer, got True"):
        TrainConfig(data=tmp_path, out=tmp_path / "r", epochs=True)
    with pytest.raises(ConfigError, match=r"`--threads` must be at least 1"):
        BenchConfig(quick=True, threads=0)


def test_broken_encoder_output_is_never_cached(tmp_path):
    import numpy as np

    from audit.encoders.cache import EmbeddingCache, content_key
    from audit.errors import EncodeError

    texts = ["a", "b"]
    keys = [content_key(t) for t in texts]
    with pytest.raises(EncodeError, match="non-finite"):
        EmbeddingCache(tmp_path, "fp").embed(texts, keys, lambda items: np.full((len(items), 2), np.nan, np.float32))
    assert not EmbeddingCache(tmp_path, "fp").has(np.asarray(keys)).any()   # the next run encodes afresh


def test_text_encoder_refuses_all_zero_embeddings(monkeypatch):
    import numpy as np

    from audit.encoders.text import load_text_encoder
    from audit.errors import EncodeError

    enc = load_text_encoder(device="cpu")
    real = enc.model.forward

    def zero(*a, **kw):
        out = real(*a, **kw)
        out.last_hidden_state = out.last_hidden_state * 0
        return out

    monkeypatch.setattr(enc.model, "forward", zero)
    with pytest.raises(EncodeError, match="all-zero embeddings of 2"):
        enc.encode(["a red square", "a blue circle"])
    monkeypatch.undo()
    assert np.abs(enc.encode(["a red square"])).sum() > 0


def test_train_resume_state_is_never_unpickled(tmp_path):
    """A crafted `trainer_state.pt` used to run code on resume (`weights_only=False`)."""
    import pickle

    from audit.config import TrainConfig
    from audit.errors import FormatError
    from audit.synth import synth
    from audit.config import SynthConfig
    from audit.train.loop import train

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    from audit.train.loop import run_identity

    data = synth(SynthConfig(env="leadin", out=tmp_path / "d", n=40, image_size=32)).parent
    run = tmp_path / "run"
    run.mkdir()
    cfg = TrainConfig(data=data, out=run, image_size=32, dim=8, vocab=64, epochs=1, vision="scratch")
    # the crafted folder looks like a run of these settings
    (run / ".shortcut-audit.json").write_text(json.dumps({"command": "train", "identity": run_identity(cfg)}))
    with open(run / "trainer_state.pt", "wb") as fh:
        pickle.dump({"model": Evil()}, fh)
    with pytest.raises(FormatError, match="is not a resumable training state"):
        train(cfg)
    assert not marker.exists()


def test_source_export_never_writes_outside_its_folder(tmp_path):
    """A VLFeedback `id` of `../../x` used to name `merged_images/../../x.jpg`, anywhere writable."""
    from audit.sources import get_format
    from audit.sources.writers import safe_file_name
    from audit.synth import generate

    assert safe_file_name("ab-12_c.jpg") == "ab-12_c.jpg"
    for bad in ("../../../../tmp/x.jpg", "/etc/passwd", "a/b.jpg", "..", ".hidden", "x\x00.jpg", ""):
        name = safe_file_name(bad)
        assert "/" not in name and ".." not in name and not name.startswith(".") and "\x00" not in name, name
    assert safe_file_name("a/b.jpg") != safe_file_name("a_b.jpg")          # cleaned names never collide

    pairs = list(generate("leadin", 3, image_size=16))
    pairs[0].sample_id = "../../../../escape"
    out = tmp_path / "deep" / "out"
    get_format("vlfeedback").write(pairs, out)
    written = {p.resolve() for p in tmp_path.rglob("*") if p.is_file()}
    assert all(out.resolve() in p.parents for p in written), written
    assert not (tmp_path / "escape.jpg").exists()
    rec = json.loads((out / "vlfeedback_80k.jsonl").read_text().splitlines()[0])
    assert rec["id"] == "../../../../escape" and rec["img_path"].startswith("merged_images/escape-")
    # and the written dataset reads back whole, each pair with its own image
    from conftest import read_pairs, run_ingest

    run_ingest(out, tmp_path / "pairs")
    t = read_pairs(tmp_path / "pairs")
    assert t.height == 3 and (t["status"] == "ok").all()


def test_outputs_honour_the_umask(tmp_path):
    """The atomic writer used to leave every output 0600 (mkstemp), unreadable to a teammate."""
    from audit.io import write_bytes_atomic

    old = os.umask(0o022)
    try:
        write_bytes_atomic(tmp_path / "f.bin", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "f.bin").stat().st_mode & 0o777 == 0o644


def test_a_folder_staged_then_renamed_into_place_honours_the_umask(tmp_path):
    """mkdtemp makes a folder 0700 whatever the umask: a model folder (`train --trainer trl`) or an
    `overlap --exclude` copy staged that way was unreadable to a teammate. Every staged output folder
    goes through `temp_dir_beside`, which gives it the mode of any new folder."""
    import re

    from audit.io import temp_dir_beside

    old = os.umask(0o022)
    try:
        made = temp_dir_beside(tmp_path / "model")
    finally:
        os.umask(old)
    assert made.parent == tmp_path and made.name.startswith(".model.")
    assert made.stat().st_mode & 0o777 == 0o755
    root = Path(__file__).resolve().parents[1] / "audit"
    direct = [str(p.relative_to(root)) for p in root.rglob("*.py") if p.name != "io.py"
              and re.search(r"\bmkdtemp\(", p.read_text(encoding="utf-8"))]
    assert not direct, f"folders made with mkdtemp outside audit/io.py: {direct}"


def _mangled_ingest(data: bytes, suffix: str, template: Path | None = None, rel: str | None = None) -> None:
    """Ingest a mangled file through the CLI: exit 0 with rows in = rows out, or exit 1 with one
    `Error:` line; never a traceback, never a file outside `-o`. `template`: a source folder copied
    first (its images), whose data file `rel` the mangled bytes replace."""
    import contextlib
    import io
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if template is not None:
            shutil.copytree(template, root / "src")
            target = root / "src" / rel
        else:
            (root / "src").mkdir()
            (root / "src" / "a.png").write_bytes(png_bytes())
            target = root / "src" / f"d{suffix}"
        target.write_bytes(data)
        before = {p for p in root.rglob("*")}
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            rc = main(["ingest", str(target), "-o", str(root / "out")])
        new = {p for p in root.rglob("*")} - before
        assert all(p == root / "out" or root / "out" in p.parents for p in new), new
        if rc == 0:
            rep = json.loads((root / "out" / "ingest_report.json").read_text())
            assert rep["rows_out"] == read_pairs(root / "out").height
        else:
            lines = err.getvalue().strip().splitlines()
            assert rc == 1 and len(lines) == 1 and lines[0].startswith("Error: "), err.getvalue()[-2000:]


_RECORDS = [_pair(i, id=f"r{i}") for i in range(12)]


def _source_bytes(suffix: str) -> bytes:
    if suffix == ".json":
        return json.dumps(_RECORDS, indent=1).encode()
    if suffix == ".jsonl":
        return "\n".join(json.dumps(r) for r in _RECORDS).encode()
    buf = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(_RECORDS), buf, row_group_size=4, compression="none")
    return buf.getvalue().to_pybytes()


@pytest.mark.parametrize("suffix", [".json", ".jsonl", ".parquet"])
def test_truncated_and_bit_flipped_sources_never_crash(suffix):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    text = _source_bytes(suffix)

    @settings(max_examples=int(os.environ.get("BAD_INPUT_EXAMPLES", "25")), deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(cut=st.integers(0, len(text)), flips=st.lists(st.tuples(st.integers(0, len(text) - 1), st.integers(0, 7)),
                                                        max_size=4))
    def check(cut, flips):
        _mangled_ingest(_flip(text, cut, flips), suffix)

    check()


def test_columns_option_naming_a_missing_column_is_an_error(root, capsys):
    write_jsonl(root / "d.jsonl", [_pair()])
    err = _cli_error(capsys, ["ingest", str(root / "d.jsonl"), "--columns", "prompt=nonexistent", "-o", str(root / "o")])
    assert err.startswith("Error: `--columns`: the source has no column `nonexistent` (mapped to `prompt`; columns: ")


def test_image_root_that_is_no_folder_is_checked_up_front(root, capsys):
    write_jsonl(root / "d.jsonl", [_pair()])
    err = _cli_error(capsys, ["ingest", str(root / "d.jsonl"), "--image-root", str(root / "nope"), "-o", str(root / "o")])
    assert err == f"Error: `--image-root {root / 'nope'}` is not a folder; pass the folder that holds the dataset's images"


def test_boolean_ratings_are_not_ratings(tmp_path):
    from audit.sources.vlfeedback import _mean_rating

    assert _mean_rating({"Helpfulness": {"Rating": True}}, ["Helpfulness"]) == "rating_unparsable"
    assert _mean_rating({"Helpfulness": {"Rating": "4"}}, ["Helpfulness"]) == 4.0


def test_a_second_run_into_the_same_output_is_refused_while_the_first_holds_it(root, capsys):
    from filelock import FileLock

    write_jsonl(root / "d.jsonl", [_pair()])
    (root / "o").mkdir()
    with FileLock(str(root / "o" / ".shortcut-audit.lock")):        # another process is writing there
        err = _cli_error(capsys, ["ingest", str(root / "d.jsonl"), "-o", str(root / "o")])
    assert err.startswith(f"Error: another `ingest` is writing into `{root / 'o'}` right now")
    assert main(["ingest", str(root / "d.jsonl"), "-o", str(root / "o")]) == 0   # released: it runs


def test_audit_folder_moved_or_scored_from_elsewhere_finds_its_pairs(tmp_path, monkeypatch):
    """`summary.json` stored `pairs_dir` relative to where `score` ran: export from elsewhere failed."""
    import shutil

    from audit import schema

    (tmp_path / "a" / "pairs").mkdir(parents=True)
    (tmp_path / "a" / "pairs" / "pairs.parquet").write_bytes(b"")
    assert schema.pairs_dir_of(tmp_path / "a", {"pairs_dir": "a/pairs"}) == tmp_path / "a" / "pairs"
    ext = tmp_path / "ext"
    (ext).mkdir()
    (ext / "pairs.parquet").write_bytes(b"")
    assert schema.pairs_dir_of(tmp_path / "a", {"pairs_dir": str(ext)}) == ext
    shutil.move(str(tmp_path / "a"), str(tmp_path / "b"))
    assert schema.pairs_dir_of(tmp_path / "b", {"pairs_dir": str(tmp_path / "a" / "pairs")}) == tmp_path / "b" / "pairs"


def test_symlinked_image_folder_works_with_the_suggested_image_root(tmp_path):
    """`images/` as a symlink to another folder: every row was `image_outside_root`, and the suggested
    `--image-root TARGET` then gave `image_missing`."""
    from audit.images import image_roots, resolve_image

    target = tmp_path / "store" / "imgs"
    target.mkdir(parents=True)
    (target / "a.png").write_bytes(png_bytes())
    ds = tmp_path / "ds"
    ds.mkdir()
    (ds / "images").symlink_to(target, target_is_directory=True)
    src = write_jsonl(ds / "d.jsonl", [_pair(i, image="images/a.png") for i in range(3)])
    rep, df = run_ingest(src, tmp_path / "o1")
    assert _statuses(rep, df) == ["image_outside_root"] * 3
    detail = df["status_detail"][0]
    assert f"pass `--image-root {target.resolve()}`" in detail
    rep, df = run_ingest(src, tmp_path / "o2", image_root=target.resolve())
    assert _statuses(rep, df) == ["ok"] * 3
    assert resolve_image(tmp_path / "o2", df["image_path"][0], image_roots(tmp_path / "o2")).read_bytes() == png_bytes()


def test_parquet_with_a_corrupt_data_page_costs_that_row_group_only(root):
    """A corrupt data page (footer intact) used to end in a traceback."""
    table = pa.Table.from_pylist([_pair(i) for i in range(40)])
    pq.write_table(table, root / "d.parquet", row_group_size=20, compression="none")
    md = pq.ParquetFile(root / "d.parquet").metadata
    col = md.row_group(1).column(0)                        # the second row group's first column chunk
    start = col.data_page_offset
    raw = bytearray((root / "d.parquet").read_bytes())
    raw[start + 8:start + 40] = b"\xff" * 32                 # inside the page: header and values garbled
    (root / "d.parquet").write_bytes(bytes(raw))
    rep, df = run_ingest(root / "d.parquet", root / "o")
    st = _statuses(rep, df)
    assert len(st) == 40 and st[:20] == ["ok"] * 20 and set(st[20:]) == {"bad_row"}
    assert "row group 1 could not be read" in df["status_detail"][25]


def test_truncated_arrow_file_is_one_error_line(root, capsys):
    table = pa.Table.from_pylist([_pair(i) for i in range(400)])
    with pa.OSFile(str(root / "data-00000-of-00001.arrow"), "wb") as sink:
        with pa.ipc.new_stream(sink, table.schema) as w:
            for b in table.to_batches(max_chunksize=50):
                w.write_batch(b)
    raw = (root / "data-00000-of-00001.arrow").read_bytes()
    (root / "data-00000-of-00001.arrow").write_bytes(raw[: len(raw) * 2 // 3])
    err = _cli_error(capsys, ["ingest", str(root / "data-00000-of-00001.arrow"), "-o", str(root / "o")])
    assert "is damaged after its first" in err and "re-create it" in err


def test_an_output_that_is_or_holds_the_input_is_refused(root, capsys):
    """`ingest F/pairs.parquet -o F` used to replace the user's own file; `export AUDIT -o AUDIT/../pairs`
    the canonical table; `-o` naming a file ended in a traceback."""
    write_jsonl(root / "d.jsonl", [_pair(i) for i in range(3)])
    err = _cli_error(capsys, ["ingest", str(root / "d.jsonl"), "-o", str(root)])
    assert err == (f"Error: `-o {root}` holds the input `{root / 'd.jsonl'}`: `ingest` would replace your own data "
                   "there; pass another output folder")
    assert main(["ingest", str(root / "d.jsonl"), "-o", str(root / "pairs")]) == 0
    err = _cli_error(capsys, ["ingest", str(root / "pairs"), "-o", str(root / "pairs")])
    assert "is the input" in err
    (root / "file.txt").write_text("x")
    err = _cli_error(capsys, ["ingest", str(root / "d.jsonl"), "-o", str(root / "file.txt")])
    assert err == f"Error: `-o {root / 'file.txt'}` is a file; `ingest` writes a folder: pass a folder path"


def test_export_into_the_audits_own_pairs_folder_is_refused(tmp_path, capsys):
    from audit.config import ScoreConfig, SynthConfig
    from audit.score import score
    from audit.synth import synth

    src = synth(SynthConfig(env="leadin", out=tmp_path / "s", n=60, image_size=32)).parent
    score(ScoreConfig(source=src, out=tmp_path / "audit", cache_dir=tmp_path / "cache", folds=2))
    capsys.readouterr()                                      # the encoder's progress lines
    before = (tmp_path / "audit" / "pairs" / "pairs.parquet").read_bytes()
    err = _cli_error(capsys, ["export", str(tmp_path / "audit"), "-o", str(tmp_path / "audit" / ".." / "audit" / "pairs")])
    assert "is the input" in err
    err = _cli_error(capsys, ["export", str(tmp_path / "audit"), "-o", str(tmp_path)])
    assert "holds the input" in err
    assert (tmp_path / "audit" / "pairs" / "pairs.parquet").read_bytes() == before


# ---- output folders: never someone else's, never stale -------------------------------------------

def test_a_non_empty_output_folder_is_refused_unless_overwrite(root, capsys):
    """Ingesting into a folder of one's own files used to mix our outputs with them; a second ingest of
    another source into an earlier output left the first one's images beside the new table."""
    write_jsonl(root / "d.jsonl", [_pair(i) for i in range(3)])
    mine = root / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    err = _cli_error(capsys, ["ingest", str(root / "d.jsonl"), "-o", str(mine)])
    assert err.startswith(f"Error: `-o {mine}` is not empty (`notes.txt`) and was not written by shortcut-audit")
    err = _cli_error(capsys, ["ingest", str(root / "d.jsonl"), "-o", str(mine), "--overwrite"])
    assert "never deletes files of your own" in err
    assert (mine / "notes.txt").read_text() == "keep me"

    out = root / "o"
    assert main(["ingest", str(root / "d.jsonl"), "-o", str(out)]) == 0
    (out / "part-1.parquet").write_bytes(b"x")       # a file only the earlier run had
    err = _cli_error(capsys, ["ingest", str(root / "d.jsonl"), "-o", str(out)])
    assert err.startswith(f"Error: `-o {out}` already holds an earlier `ingest` output (`ingest_report.json`, "
                          "`pairs.parquet`, `part-1.parquet`, ...); pass `--overwrite`")
    assert main(["ingest", str(root / "d.jsonl"), "-o", str(out), "--overwrite"]) == 0
    assert not (out / "part-1.parquet").exists() and read_pairs(out).height == 3
    marker = json.loads((out / ".shortcut-audit.json").read_text())
    assert marker["command"] == "ingest" and marker["state"] == "finished"
    hidden = sorted(p.name for p in out.iterdir() if p.name.startswith("."))
    assert hidden == [".shortcut-audit.json", ".shortcut-audit.lock"]
    # Another command's folder is not an ingest's to continue either.
    err = _cli_error(capsys, ["synth", "--env", "leadin", "--n", "5", "-o", str(out)])
    assert "already holds an earlier `ingest` output" in err


def test_a_replacement_that_dies_leaves_the_earlier_output(tmp_path):
    """A failed `--overwrite` run must not cost the user the output it was replacing (a killed one:
    tests/test_output_safety.py kills one at every step)."""
    from audit.io import OLD, claim_output

    out = tmp_path / "o"
    with claim_output(out, "export"):
        (out / "data.parquet").write_text("old")
    with pytest.raises(RuntimeError):
        with claim_output(out, "export", overwrite=True):
            assert not (out / "data.parquet").exists()          # set aside while the new run writes
            assert (out / OLD / "data.parquet").read_text() == "old"
            (out / "train.jsonl").write_text("half")
            raise RuntimeError("died")
    assert sorted(p.name for p in out.iterdir()) == [".shortcut-audit.json", ".shortcut-audit.lock", "data.parquet"]
    assert (out / "data.parquet").read_text() == "old"


def test_resumable_commands_continue_their_own_folder_only(tmp_path, capsys):
    from audit.io import claim_output

    out = tmp_path / "run"
    with claim_output(out, "train", resumable=True):
        (out / "trainer_state.pt").write_bytes(b"x")
    with claim_output(out, "train", resumable=True):              # a resume: nothing is deleted
        assert (out / "trainer_state.pt").exists()
    with pytest.raises(Exception, match="already holds an earlier `train` output"):
        with claim_output(out, "score", resumable=True):
            pass
    with claim_output(out, "train", resumable=True, overwrite=True):   # start afresh
        assert not (out / "trainer_state.pt").exists()


def test_scores_named_on_text_columns_are_one_error_line(tmp_path, capsys):
    """`eval --scores prompt,chosen` stopped with a ValueError traceback (so did `score --mm-scores`)."""
    data = tmp_path / "d"
    assert main(["synth", "--env", "leadin", "--n", "24", "--image-size", "32", "-o", str(data)]) == 0
    capsys.readouterr()
    err = _cli_error(capsys, ["eval", "--scores", "prompt,chosen", str(data)])
    assert err == ("Error: `--scores` column `prompt` holds values that are not numbers (e.g. "
                   "'Where is the purple triangle?'): name the columns of the reward model's scores")
    err = _cli_error(capsys, ["score", str(data), "-o", str(tmp_path / "a"), "--folds", "2", "--text-probe", "lexical",
                              "--mm-scores", "chosen"])
    assert err.startswith("Error: `--mm-scores` column `chosen` holds values that are not numbers")


def test_eval_writes_only_a_json_results_file(tmp_path, capsys):
    from audit.config import EvalConfig
    from audit.errors import ConfigError

    (tmp_path / "notes.json").write_text('{"mine": 1}')
    for bad, msg in [(tmp_path / "r.txt", "pass a path ending in `.json`"), (tmp_path, "pass a path ending in `.json`"),
                     (tmp_path / "notes.json", "is not an earlier `eval` result")]:
        with pytest.raises(ConfigError, match=msg.replace("(", r"\(").replace(")", r"\)")):
            EvalConfig(run=None, data=[tmp_path], scores="m", out=bad)


def test_export_of_another_format_into_an_earlier_export_leaves_no_stale_rows(tmp_path, capsys):
    """A second export of another format used to leave the first one's files beside it, and
    `load_dataset("parquet", data_dir=...)` then read the stale rows."""
    from audit.config import ScoreConfig, SynthConfig
    from audit.score import score
    from audit.synth import synth

    src = synth(SynthConfig(env="leadin", out=tmp_path / "s", n=60, image_size=32)).parent
    score(ScoreConfig(source=src, out=tmp_path / "audit", cache_dir=tmp_path / "cache", folds=2))
    capsys.readouterr()
    exp = tmp_path / "exp"
    assert main(["export", str(tmp_path / "audit"), "-o", str(exp), "--format", "parquet"]) == 0
    first = sorted(p.name for p in exp.iterdir())
    err = _cli_error(capsys, ["export", str(tmp_path / "audit"), "-o", str(exp), "--format", "trl"])
    assert err.startswith(f"Error: `-o {exp}` already holds an earlier `export` output")
    assert sorted(p.name for p in exp.iterdir()) == first
    assert main(["export", str(tmp_path / "audit"), "-o", str(exp), "--format", "trl", "--overwrite"]) == 0
    assert "pairs.parquet" in first
    assert sorted(p.name for p in exp.iterdir()) == [".shortcut-audit.json", ".shortcut-audit.lock", "export_report.json",
                                                     "train-00000-of-00001.parquet"]    # the parquet export is gone


SOURCE_FORMATS = ["vlfeedback", "rlaif-v", "rlhf-v", "povid", "trl", "vl-rewardbench", "alignrm"]


@pytest.fixture(scope="module")
def format_sources(tmp_path_factory):
    """A small synthetic source of each real format (its data file and images, as written by `synth`)."""
    from audit.config import SynthConfig
    from audit.synth import synth

    base = tmp_path_factory.mktemp("formats")
    out = {}
    for fmt in SOURCE_FORMATS:
        path = synth(SynthConfig(env="leadin", out=base / fmt, n=6, image_size=16, format=fmt))
        out[fmt] = (base / fmt, str(path.relative_to(base / fmt)))
    return out


def _flip(text: bytes, cut: int, flips: list) -> bytes:
    data = bytearray(text[:cut] if cut < len(text) and not flips else text)
    for pos, bit in flips:
        if pos < len(data):
            data[pos] ^= 1 << bit
    return bytes(data)


@pytest.mark.parametrize("fmt", SOURCE_FORMATS)
def test_truncated_and_bit_flipped_files_of_every_source_format_never_crash(fmt, format_sources):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    template, rel = format_sources[fmt]
    text = (template / rel).read_bytes()

    @settings(max_examples=int(os.environ.get("BAD_INPUT_EXAMPLES", "10")), deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(cut=st.integers(0, len(text)), flips=st.lists(st.tuples(st.integers(0, len(text) - 1), st.integers(0, 7)),
                                                        max_size=4))
    def check(cut, flips):
        _mangled_ingest(_flip(text, cut, flips), "", template, rel)

    check()



@pytest.mark.parametrize("fmt", ["vlfeedback", "povid", "alignrm"])
def test_random_values_in_records_of_every_json_format_never_crash(fmt, format_sources):
    """Records with a key dropped or its value replaced by any JSON value (numbers, null, nested lists
    and objects, odd strings): a status per row or one error line, never a traceback."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    template, rel = format_sources[fmt]
    raw = (template / rel).read_text(encoding="utf-8")
    records = json.loads(raw) if rel.endswith(".json") else [json.loads(line) for line in raw.splitlines() if line]
    keys = sorted({k for r in records for k in r})
    values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                          lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                          max_leaves=8)

    @settings(max_examples=int(os.environ.get("BAD_INPUT_EXAMPLES", "10")), deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(edits=st.lists(st.tuples(st.integers(0, len(records) - 1), st.sampled_from(keys),
                                    st.one_of(st.just("drop"), values)), min_size=1, max_size=4))
    def check(edits):
        recs = [dict(r) for r in records]
        for i, key, value in edits:
            if value == "drop":
                recs[i].pop(key, None)
            else:
                recs[i][key] = value
        data = json.dumps(recs) if rel.endswith(".json") else "\n".join(json.dumps(r) for r in recs)
        _mangled_ingest(data.encode(), "", template, rel)

    check()


def test_a_huge_answer_costs_the_cues_and_the_lexical_features_what_a_long_one_does():
    """A 20 MB answer: the cues read its head and tail (its length stays whole), the n-gram features and
    the token embeddings its first characters, so the text side takes bounded time and memory."""
    import time
    import tracemalloc

    import numpy as np

    from audit.probes.cues import CUE_CHARS, CUE_FUNCS, cue_values
    from audit.probes.lexical import pair_features

    unit = "a red circle and a blue square, "

    def run(text: str):
        tracemalloc.start()
        t0 = time.perf_counter()
        try:
            values = cue_values([text], ["what is shown?"])[0]
            x = pair_features(["what is shown?"], [text], ["a cat"], with_prompt=True)
            return values, x, tracemalloc.get_traced_memory()[1], time.perf_counter() - t0
        finally:
            tracemalloc.stop()

    long = "Certainly! " + unit * (2 * CUE_CHARS // len(unit)) + "I hope this helps!"     # 200k characters
    huge = "Certainly! " + unit * 600_000 + "I hope this helps!"                          # 19 MB
    _, _, peak_long, secs_long = run(long)
    values, x, peak, secs = run(huge)
    names = list(CUE_FUNCS)
    assert values[names.index("length")] == pytest.approx(np.log1p(len(huge)))
    assert values[names.index("lead_in")] == 1 and values[names.index("closing")] == 1   # head and tail are read
    assert x.nnz > 0 and peak < 1.5 * peak_long and secs < 3 * secs_long + 1
