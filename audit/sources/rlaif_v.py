"""RLAIF-V (openbmb/RLAIF-V-Dataset): sharded Parquet, `question` / `chosen` / `rejected`, embedded image."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator

from audit.sources.base import TRUTH_SPEC, RawPair, SourceFormat, dumps, hf_image, image_at
from audit.sources.writers import write_parquet

SPEC = {"ds_name": "string", "image": "image", "question": "string", "chosen": "string", "rejected": "string",
        "origin_dataset": "string", "origin_split": "string", "idx": "string", "image_path": "string"}


class RLAIFV(SourceFormat):
    name = "rlaif-v"
    summary = "Parquet with `question`, `chosen`, `rejected` and an embedded `image` (RLAIF-V)"
    signature = ("question", "chosen", "rejected")

    def looks_like(self, rec: dict) -> bool:
        return isinstance(rec.get("chosen"), str) or rec.get("chosen") is None

    def to_pairs(self, rec: dict, index: int) -> Iterator[RawPair]:
        image = image_at(rec, "image")
        if image is None and isinstance(rec.get("image_path"), str):
            image = image_at(rec, "image_path")
        extra = self.rest(rec, ("question", "chosen", "rejected", "image"))
        if "image_path" in extra:   # the source's own relative path; ours is `image_path`
            extra["src_image_path"] = extra.pop("image_path")
        yield RawPair(self.sample_id(rec, index, "idx", "id"), rec.get("question"), rec.get("chosen"),
                      rec.get("rejected"), image, extra=extra)

    def write(self, pairs: Iterable, out: Path, extra_spec: dict | None = None, **_: Any) -> Path:
        spec = {**SPEC, **(TRUTH_SPEC if extra_spec is None else extra_spec)}

        def rows() -> Iterator[dict]:
            for p in pairs:
                yield {"ds_name": "RLAIF-V", "image": hf_image(p.image_png, p.image_name), "question": p.prompt,
                       "chosen": p.chosen, "rejected": p.rejected, "origin_dataset": "synthetic",
                       "origin_split": dumps({"policy": "synth", "labeler": "synth", "type": p.truth["task"]}),
                       "idx": p.sample_id, "image_path": f"synth/{p.image_name}", **p.truth}

        return write_parquet(rows(), out / "RLAIF-V-Dataset_000.parquet", spec)
