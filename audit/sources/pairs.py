"""The generic pairs format: `prompt`, `chosen`, `rejected` and an image (`image` as a path, bytes or
HF Image; or `image_path` / `img_path` / `images`) in JSONL, JSON, Parquet or an HF folder. Our own
pairs folders read back through it. `--columns` maps other names onto these."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator

from audit.sources.base import TRUTH_SPEC, RawPair, SourceFormat, hf_image, image_at
from audit.sources.writers import ImageFiles, write_hf_folder, write_json_array, write_jsonl, write_parquet

IMAGE_KEYS = ("image", "image_path", "img_path", "images")
# Columns our own ingest computes; re-ingesting a pairs folder computes them again.
DERIVED = ("pair_id", "status", "status_detail", "image_id", "image_phash", "image_thumb", "prompt_id", "extra_json",
           "source_record", "source_item")


def _margin(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


class Pairs(SourceFormat):
    name = "pairs"
    summary = "generic: `prompt`, `chosen`, `rejected`, `image` (path, bytes or HF Image) in any container"
    signature = ("prompt", "chosen", "rejected")
    specificity = 1

    def looks_like(self, rec: dict) -> bool:
        return not isinstance(rec.get("chosen"), list)

    def to_pairs(self, rec: dict, index: int) -> Iterator[RawPair]:
        image = image_at(rec, *IMAGE_KEYS)
        extra = self.rest(rec, ("prompt", "chosen", "rejected", "margin", "sample_id", "source", *IMAGE_KEYS, *DERIVED))
        sid = self.sample_id(rec, index, "sample_id", "id", "idx")
        pair = RawPair(sid, rec.get("prompt"), rec.get("chosen"), rec.get("rejected"), image,
                       margin=_margin(rec.get("margin")), extra=extra)
        if isinstance(rec.get("source"), str) and rec["source"]:
            pair.extra["source"] = rec["source"]   # a re-ingested pairs folder keeps its original source name
        yield pair

    def write(self, pairs: Iterable, out: Path, container: str = "parquet", extra_spec: dict | None = None,
              **_: Any) -> Path:
        truth = TRUTH_SPEC if extra_spec is None else extra_spec
        if container in ("parquet", "hf"):
            spec = {"sample_id": "string", "prompt": "string", "chosen": "string", "rejected": "string",
                    "image": "image", **truth}

            def rows() -> Iterator[dict]:
                for p in pairs:
                    yield {"sample_id": p.sample_id, "prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected,
                           "image": hf_image(p.image_png), **p.truth}

            if container == "hf":
                return write_hf_folder(rows(), out / "pairs_dataset", spec)
            return write_parquet(rows(), out / "pairs.parquet", spec)
        images = ImageFiles(out, "images")

        def path_rows() -> Iterator[dict]:
            for p in pairs:
                yield {"sample_id": p.sample_id, "prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected,
                       "image": images(p), **p.truth}

        if container == "json":
            return write_json_array(path_rows(), out / "pairs.json")
        return write_jsonl(path_rows(), out / "pairs.jsonl")
