"""What every source format provides: detection, reading records into pairs, writing (for synth).

A format is one small class in its own file, registered by name in `audit.sources`. Reading turns
one source record into `RawPair`s (and `NotPaired` for comparisons that make no pair); the common
checks (texts, images, duplicates) happen once, in `audit.ingest`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable, Iterator


@dataclass
class ImageRef:
    """An image as the source gives it: embedded bytes, or a path to resolve inside the root."""

    data: bytes | None = None
    path: str | None = None
    fallbacks: tuple[str, ...] = ()   # other relative paths to try when `path` is missing
    # Where the record holds it (keys and list positions down to the bytes or the path string); None when
    # the format derives it (VLFeedback's `merged_images/{id}.jpg`). A written-back copy points it anew.
    key: tuple | None = None


@dataclass
class RawPair:
    sample_id: str
    prompt: Any = None
    chosen: Any = None
    rejected: Any = None
    image: ImageRef | None = None
    margin: float | None = None
    extra: dict = field(default_factory=dict)
    status: str | None = None    # set by a reader for a record it cannot use (bad_row, missing_field)
    detail: str | None = None
    parts: tuple[int, ...] | None = None   # the record's responses it compares (VLFeedback completions)


@dataclass
class NotPaired:
    """A comparison that does not become a pair (tie, unparsable rating, ...): counted, not written."""

    reason: str


@dataclass
class BadRecord:
    """A source record that could not be parsed at all (broken JSON line, wrong type)."""

    where: str
    detail: str


def image_from_value(value: Any, key: tuple = ()) -> ImageRef | None:
    """HF Image struct {bytes, path}, raw bytes, or a path string -> ImageRef; `key` is where the record
    holds `value` (the ref's `key` then points at the bytes or the path string itself)."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray, memoryview)):
        return ImageRef(data=bytes(value), key=key)
    if isinstance(value, str):
        return ImageRef(path=value, key=key) if value.strip() else None
    if isinstance(value, dict):
        if value.get("bytes"):
            return ImageRef(data=bytes(value["bytes"]), key=(*key, "bytes"))
        if isinstance(value.get("path"), str) and value["path"].strip():
            return ImageRef(path=value["path"], key=(*key, "path"))
    return None


def image_at(rec: dict, *keys: str) -> ImageRef | None:
    """The first image found under one of the record's `keys` (a list there: its first element)."""
    for k in keys:
        v, at = rec.get(k), (k,)
        if isinstance(v, list):
            v, at = (v[0] if v else None), (k, 0)
        ref = image_from_value(v, at)
        if ref is not None:
            return ref
    return None


_IMAGE_TOKEN = re.compile(r"\s*<image>\s*")


def strip_image_token(prompt: Any) -> Any:
    """Remove `<image>` placeholders (POVID, MM-RLHF); the trainer inserts its own image slot."""
    if isinstance(prompt, str) and "<image>" in prompt:
        return _IMAGE_TOKEN.sub(" ", prompt).strip()
    return prompt


# Types of the ground-truth columns synth adds to every row (writers take any such spec).
TRUTH_SPEC = {"env": "string", "task": "string", "cue": "string", "cue_on_chosen": "bool", "cue_p": "float64",
              "planted_copy_of": "string"}


def hf_image(png: bytes, path: str | None = None) -> dict:
    return {"bytes": png, "path": path}


class SourceFormat:
    """Base class: subclasses set the class attributes and implement `to_pairs` and `write`."""

    name: ClassVar[str]
    summary: ClassVar[str]
    signature: ClassVar[tuple[str, ...]]   # columns that identify the format (all required)
    specificity: ClassVar[int] = 3         # breaks detection ties: higher = more specific
    # The format's own columns (in the pairs table) that say which response is preferred in a way no
    # generic rule flips (`audit.schema.swap_rule`): a pair swapped by a reviewer drops them.
    oriented: ClassVar[tuple[str, ...]] = ()

    def detect(self, rec: dict) -> int:
        """0 if `rec` is not of this format, else its specificity."""
        if all(k in rec for k in self.signature) and self.looks_like(rec):
            return self.specificity
        return 0

    def looks_like(self, rec: dict) -> bool:
        return True

    def missing(self, keys: Iterable[str]) -> list[str]:
        keys = set(keys)
        return [k for k in self.signature if k not in keys]

    def to_pairs(self, rec: dict, index: int) -> Iterator[RawPair | NotPaired]:
        raise NotImplementedError

    def write(self, pairs: Iterable, out: Path, **opts: Any) -> Path:
        raise NotImplementedError

    # Writing kept records back (`audit.sources.writeback`): each record as it was read.
    def write_back(self, rec: dict, index: int, keep: dict[int, dict], swap: set[int],
                   avoid: set[int] | None) -> list[dict]:
        """The records to write so that ingesting them gives exactly the pairs `keep` of `rec` (its pair
        positions, each with the fields to add, e.g. weights), those in `swap` reversed, and none of
        `avoid` (None: no other pair of the record). One pair per record here: the record itself."""
        (item, fields), = keep.items()
        return [{**(flip_flags(self.swapped(rec)) if item in swap else rec), **fields}]

    def swapped(self, rec: dict) -> dict:
        """`rec` with its preference reversed: here the values of `chosen` and `rejected` exchanged."""
        return {**rec, "chosen": rec.get("rejected"), "rejected": rec.get("chosen")}

    def point_image(self, rec: dict, key: tuple | None, rel: str) -> None:
        """Make `rec` name its picture `rel` (a path inside the copy's folder) where it named one before."""
        set_at(rec, key, rel)

    def added_fields(self, fields: dict) -> dict:
        """Arrow types of the fields a write-back may add to a record (`fields`: the columns given, name ->
        Arrow type: float weights, a boolean flag)."""
        return dict(fields)

    # helpers shared by the formats
    # Id columns a user's own data often has: any of them becomes `sample_id` when the format's own id
    # field is absent (or map another with `--columns sample_id=MY_ID`).
    ID_FALLBACKS = ("sample_id", "uid", "uuid", "example_id", "item_id", "question_id")

    @staticmethod
    def sample_id(rec: dict, index: int, *keys: str) -> str:
        for k in (*keys, *(k for k in SourceFormat.ID_FALLBACKS if k not in keys)):
            v = rec.get(k)
            if v is not None and str(v) != "":
                return str(v)
        return f"row{index}"

    @staticmethod
    def rest(rec: dict, consumed: Iterable[str]) -> dict:
        consumed = set(consumed)
        return {k: v for k, v in rec.items() if k not in consumed}


def flip_flags(rec: dict) -> dict:
    """A swapped record's own `*_on_chosen` flags (say, synthetic truth) negated, as the column contract
    says (`audit.schema.swap_rule`)."""
    from audit.schema import swap_rule

    return {k: (not v) if isinstance(v, bool) and swap_rule(k, set(), set()) == ("not",) else v for k, v in rec.items()}


def set_at(rec: Any, key: tuple, value: Any) -> None:
    """Set the value at `key` (keys and list positions, as `ImageRef.key`) inside `rec`."""
    for k in key[:-1]:
        rec = rec[k]
    rec[key[-1]] = value


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, default=str)
