"""TRL's vision preference format: conversational `prompt` / `chosen` / `rejected` and `images`
(a list of HF Images) or `image`. Plain-string content and the implicit-prompt variant are accepted."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator

from audit.sources.base import TRUTH_SPEC, RawPair, SourceFormat, hf_image, image_from_value
from audit.sources.writers import write_hf_folder, write_parquet

MESSAGES = [{"role": "string", "content": [{"text": "string", "type": "string"}]}]
SPEC = {"prompt": MESSAGES, "chosen": MESSAGES, "rejected": MESSAGES, "images": ["image"]}


def _text(messages: Any, roles: tuple[str, ...]) -> str | None:
    """Join the text items of the messages with one of `roles`; None if the shape is wrong."""
    if isinstance(messages, str):
        return messages
    if not isinstance(messages, list):
        return None
    parts = []
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in roles:
            continue
        content = m.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(c["text"] for c in content
                         if isinstance(c, dict) and c.get("type") == "text" and isinstance(c.get("text"), str))
    return "\n\n".join(parts) if parts else None


class TRL(SourceFormat):
    name = "trl"
    summary = "TRL vision preference: conversational `prompt`/`chosen`/`rejected` + `images` (or `image`)"
    signature = ("chosen", "rejected")

    def detect(self, rec: dict) -> int:
        conversational = isinstance(rec.get("chosen"), list) and isinstance(rec.get("rejected"), list)
        return 3 if conversational and ("images" in rec or "image" in rec) else 0

    def to_pairs(self, rec: dict, index: int) -> Iterator[RawPair]:
        images = rec.get("images")
        if isinstance(images, list):
            image = image_from_value(images[0], ("images", 0)) if images else None
        else:
            image = image_from_value(rec.get("image"), ("image",))
        extra = self.rest(rec, ("prompt", "chosen", "rejected", "images", "image"))
        if isinstance(images, list) and len(images) > 1:
            extra["n_images"] = len(images)   # the audit uses the first image
        prompt = _text(rec.get("prompt"), ("user", "system")) if "prompt" in rec else \
            _text(rec.get("chosen"), ("user", "system"))   # implicit prompt: the user turn lives in chosen
        chosen = _text(rec.get("chosen"), ("assistant",))
        rejected = _text(rec.get("rejected"), ("assistant",))
        yield RawPair(self.sample_id(rec, index, "id"), prompt, chosen, rejected, image, extra=extra)

    def write(self, pairs: Iterable, out: Path, container: str = "parquet", extra_spec: dict | None = None, **_: Any) -> Path:
        spec = {**SPEC, **(TRUTH_SPEC if extra_spec is None else extra_spec)}

        def rows() -> Iterator[dict]:
            for p in pairs:
                yield {"prompt": [{"role": "user", "content": [{"type": "image", "text": None},
                                                               {"type": "text", "text": p.prompt}]}],
                       "chosen": [{"role": "assistant", "content": [{"type": "text", "text": p.chosen}]}],
                       "rejected": [{"role": "assistant", "content": [{"type": "text", "text": p.rejected}]}],
                       "images": [hf_image(p.image_png)], **p.truth}

        if container == "hf":
            return write_hf_folder(rows(), out / "trl_dataset", spec)
        return write_parquet(rows(), out / "train-00000-of-00001.parquet", spec)
