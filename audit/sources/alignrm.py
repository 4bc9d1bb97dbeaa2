"""AlignRM pairwise JSONL (Generalizable-MM-RM): `prompt`, `img_path`, `chosen`, `rejected`.

AlignRM opens `img_path` as is; here it resolves inside the image root like every path."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator

from audit.sources.base import RawPair, SourceFormat, image_at
from audit.sources.writers import ImageFiles, write_jsonl


class AlignRM(SourceFormat):
    name = "alignrm"
    summary = "JSONL with `prompt`, `img_path`, `chosen`, `rejected` (AlignRM's pairwise format)"
    signature = ("prompt", "img_path", "chosen", "rejected")
    specificity = 2

    def looks_like(self, rec: dict) -> bool:
        return not isinstance(rec.get("chosen"), list)

    def to_pairs(self, rec: dict, index: int) -> Iterator[RawPair]:
        extra = self.rest(rec, ("prompt", "img_path", "chosen", "rejected"))
        yield RawPair(self.sample_id(rec, index, "id"), rec.get("prompt"), rec.get("chosen"), rec.get("rejected"),
                      image_at(rec, "img_path"), extra=extra)

    def write(self, pairs: Iterable, out: Path, **_: Any) -> Path:
        images = ImageFiles(out, "images")

        def rows() -> Iterator[dict]:
            for p in pairs:
                yield {"id": p.sample_id, "prompt": p.prompt, "img_path": images(p), "chosen": p.chosen,
                       "rejected": p.rejected, **p.truth}

        return write_jsonl(rows(), out / "alignrm_pairs.jsonl")
