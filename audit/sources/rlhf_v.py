"""RLHF-V (openbmb/RLHF-V-Dataset): Parquet whose `text` is a JSON string {question, chosen, rejected}."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Iterator

from audit.sources.base import TRUTH_SPEC, RawPair, SourceFormat, dumps, hf_image, image_at
from audit.sources.writers import write_parquet

SPEC = {"ds_name": "string", "image": "image", "text": "string", "origin_dataset": "string",
        "origin_split": "string", "idx": "int64", "image_path": "string"}


class RLHFV(SourceFormat):
    name = "rlhf-v"
    summary = "Parquet with `text` = JSON string of question/chosen/rejected and an embedded `image` (RLHF-V)"
    signature = ("text", "image")

    def looks_like(self, rec: dict) -> bool:
        text = rec.get("text")
        return isinstance(text, str) and text.lstrip().startswith("{") and '"question"' in text

    def to_pairs(self, rec: dict, index: int) -> Iterator[RawPair]:
        sid = self.sample_id(rec, index, "idx", "id")
        image = image_at(rec, "image")
        extra = self.rest(rec, ("text", "image"))
        if "image_path" in extra:
            extra["src_image_path"] = extra.pop("image_path")
        try:
            text = json.loads(rec.get("text") or "")
        except (TypeError, ValueError) as e:
            yield RawPair(sid, image=image, extra=extra, status="bad_row",
                          detail=f"column `text` is not a JSON string with question/chosen/rejected ({e})")
            return
        if not isinstance(text, dict):
            yield RawPair(sid, image=image, extra=extra, status="bad_row",
                          detail=f"column `text` holds a JSON {type(text).__name__}, expected an object")
            return
        yield RawPair(sid, text.get("question"), text.get("chosen"), text.get("rejected"), image, extra=extra)

    def swapped(self, rec: dict) -> dict:
        text = json.loads(rec["text"])
        return {**rec, "text": dumps({**text, "chosen": text.get("rejected"), "rejected": text.get("chosen")})}

    def write(self, pairs: Iterable, out: Path, extra_spec: dict | None = None, **_: Any) -> Path:
        spec = {**SPEC, **(TRUTH_SPEC if extra_spec is None else extra_spec)}

        def rows() -> Iterator[dict]:
            for k, p in enumerate(pairs):
                yield {"ds_name": "RLHF-V-Hall_v1", "image": hf_image(p.image_png),
                       "text": dumps({"question": p.prompt, "chosen": p.chosen, "rejected": p.rejected}),
                       "origin_dataset": "synthetic", "origin_split": dumps({"model": "synth", "type": p.truth["task"]}),
                       "idx": k, "image_path": f"synth/{p.image_name}", **p.truth}

        return write_parquet(rows(), out / "RLHF-V-Dataset.parquet", spec)
