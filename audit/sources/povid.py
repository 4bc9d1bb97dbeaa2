"""POVID (YiyangAiLab/POVID_preference_data_for_VLLMs): one JSON array, `conversations` (preferred) and
`rejected_conversations`, image paths under a root (COCO train2014; a bare file name also resolves)."""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import Any, Iterable, Iterator

from audit.sources.base import ImageRef, RawPair, SourceFormat, strip_image_token
from audit.sources.writers import ImageFiles, write_json_array


def _turn(conv: Any, role: str) -> Any:
    """Text of the first turn whose `from` is `role`, or None."""
    if not isinstance(conv, list):
        return None
    for turn in conv:
        if isinstance(turn, dict) and turn.get("from") == role:
            return turn.get("value")
    return None


class POVID(SourceFormat):
    name = "povid"
    summary = "JSON array with `conversations` / `rejected_conversations` (from/value turns) and an `image` path (POVID)"
    signature = ("conversations", "rejected_conversations")

    def to_pairs(self, rec: dict, index: int) -> Iterator[RawPair]:
        sid = self.sample_id(rec, index, "id")
        path = rec.get("image")
        image = None
        if isinstance(path, str) and path.strip():
            base = posixpath.basename(path.replace("\\", "/"))
            image = ImageRef(path=path, fallbacks=(base,) if base != path else (), key=("image",))
        extra = self.rest(rec, ("id", "image", "conversations", "rejected_conversations"))
        extra["id"] = rec.get("id")
        conv, rej = rec.get("conversations"), rec.get("rejected_conversations")
        if not isinstance(conv, list) or not isinstance(rej, list):
            yield RawPair(sid, image=image, extra=extra, status="bad_row",
                          detail="`conversations` and `rejected_conversations` must be lists of {from, value} turns")
            return
        prompt, prompt_rej = strip_image_token(_turn(conv, "human")), strip_image_token(_turn(rej, "human"))
        if prompt_rej is not None and prompt != prompt_rej:
            yield RawPair(sid, prompt, _turn(conv, "gpt"), _turn(rej, "gpt"), image, extra=extra, status="bad_row",
                          detail="the human turns of `conversations` and `rejected_conversations` differ: "
                                 "the two answers respond to different prompts")
            return
        yield RawPair(sid, prompt, _turn(conv, "gpt"), _turn(rej, "gpt"), image, extra=extra)

    def swapped(self, rec: dict) -> dict:
        return {**rec, "conversations": rec.get("rejected_conversations"), "rejected_conversations": rec.get("conversations")}

    def write(self, pairs: Iterable, out: Path, **_: Any) -> Path:
        images = ImageFiles(out, "coco")

        def rows() -> Iterator[dict]:
            for p in pairs:
                rel = images(p)
                human = {"from": "human", "value": f"<image>\n{p.prompt}"}
                yield {"id": p.sample_id, "image": rel,
                       "conversations": [human, {"from": "gpt", "value": p.chosen}],
                       "rejected_conversations": [human, {"from": "gpt", "value": p.rejected}], **p.truth}

        return write_json_array(rows(), out / "POVID_preference_data_for_VLLMs_version_1.json")
