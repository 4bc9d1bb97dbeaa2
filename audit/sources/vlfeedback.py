"""VLFeedback (MMInstruction/VLFeedback): one prompt, several rated completions -> pairs.

Raw JSONL has `completions` as a list of dicts, the HF layout as a dict of lists; both are read.
Every two completions make a candidate pair ranked by the mean `Rating` over all aspects (as
Silkie's `make_vlfeedback_paired_dataset`); ties, unparsable and missing ratings make no pair and
are counted. The image is `img_path`, an embedded `image`, or `merged_images/{id}.jpg` under the root.
"""

from __future__ import annotations

import math
from itertools import combinations
from pathlib import Path
from typing import Any, Iterable, Iterator

from audit.sources.base import ImageRef, NotPaired, RawPair, SourceFormat, image_from_value
from audit.sources.writers import ImageFiles, png_to_jpeg, write_jsonl

ASPECTS = ("Helpfulness", "Ethical Considerations", "Visual Faithfulness")


def _completions(value: Any) -> list[dict] | None:
    if isinstance(value, list):
        return [c if isinstance(c, dict) else {} for c in value]
    if isinstance(value, dict):   # HF columnar layout: {"annotations": [...], "model": [...], "response": [...]}
        cols = {k: v for k, v in value.items() if isinstance(v, list)}
        n = max((len(v) for v in cols.values()), default=0)
        return [{k: (v[i] if i < len(v) else None) for k, v in cols.items()} for i in range(n)]
    return None


def _mean_rating(anno: Any, aspects: list[str]) -> float | str:
    """Mean rating over `aspects`, or the reason it has none (`rating_missing` / `rating_unparsable`)."""
    if not isinstance(anno, dict):
        return "rating_missing"
    values = []
    for a in aspects:
        item = anno.get(a)
        rating = item.get("Rating") if isinstance(item, dict) else None
        if rating is None:
            return "rating_missing"
        if isinstance(rating, bool):          # float(True) is 1.0: a boolean is no rating
            return "rating_unparsable"
        try:
            v = float(rating)
        except (TypeError, ValueError):
            return "rating_unparsable"
        if not math.isfinite(v):
            return "rating_unparsable"
        values.append(v)
    return sum(values) / len(values) if values else "rating_missing"


class VLFeedback(SourceFormat):
    name = "vlfeedback"
    summary = "prompt + rated `completions` (raw list of dicts or HF dict of lists); pairs by mean rating"
    signature = ("prompt", "completions")

    def to_pairs(self, rec: dict, index: int) -> Iterator[RawPair | NotPaired]:
        sid = self.sample_id(rec, index, "id")
        comps = _completions(rec.get("completions"))
        if comps is None:
            yield RawPair(sid, status="bad_row", detail="`completions` is neither a list of dicts nor a dict of lists")
            return
        if len(comps) < 2:
            yield NotPaired("too_few_completions")
            return
        image = image_from_value(rec.get("img_path")) or image_from_value(rec.get("image"))
        if image is None and rec.get("id") is not None:
            image = ImageRef(path=f"merged_images/{rec['id']}.jpg", fallbacks=(f"{rec['id']}.jpg",))
        aspects = sorted({a for c in comps if isinstance(c.get("annotations"), dict) for a in c["annotations"]})
        ratings = [_mean_rating(c.get("annotations"), aspects) for c in comps]
        extra = self.rest(rec, ("id", "prompt", "completions", "img_path", "image"))
        for i, j in combinations(range(len(comps)), 2):
            ri, rj = ratings[i], ratings[j]
            bad = [r for r in (ri, rj) if isinstance(r, str)]
            if bad:
                yield NotPaired("rating_missing" if "rating_missing" in bad else "rating_unparsable")
                continue
            if ri == rj:
                yield NotPaired("tie")
                continue
            hi, lo = (i, j) if ri > rj else (j, i)
            yield RawPair(
                sample_id=sid, prompt=rec.get("prompt"), chosen=comps[hi].get("response"),
                rejected=comps[lo].get("response"), image=image, margin=abs(ri - rj),
                extra={**extra, "chosen_model": comps[hi].get("model"), "rejected_model": comps[lo].get("model"),
                       "chosen_rating": max(ri, rj), "rejected_rating": min(ri, rj)})

    def write(self, pairs: Iterable, out: Path, seed: int = 0, **_: Any) -> Path:
        """Raw `vlfeedback_80k.jsonl` + `merged_images/{id}.jpg`, one row per pair with its two rated
        completions (an export keeps the pair's mean ratings; synthetic pairs draw ratings)."""
        import numpy as np

        images = ImageFiles(out, "merged_images", name=lambda p: f"{p.sample_id}.jpg", encode=png_to_jpeg)

        def rows() -> Iterator[dict]:
            for k, p in enumerate(pairs):
                rng = np.random.default_rng([seed, 7, k])
                if p.truth.get("chosen_rating") is not None and p.truth.get("rejected_rating") is not None:
                    good = {a: repr(float(p.truth['chosen_rating'])) for a in ASPECTS}
                    bad = {a: repr(float(p.truth['rejected_rating'])) for a in ASPECTS}
                else:
                    good = {"Helpfulness": str(rng.integers(4, 6)), "Ethical Considerations": "5",
                            "Visual Faithfulness": str(rng.integers(4, 6))}
                    bad = {"Helpfulness": str(rng.integers(1, 4)), "Ethical Considerations": "5",
                           "Visual Faithfulness": str(rng.integers(1, 3))}
                comps = [
                    {"annotations": {a: {"Rating": r, "Rationale": "synthetic"} for a, r in good.items()},
                     "model": "model-a", "response": p.chosen},
                    {"annotations": {a: {"Rating": r, "Rationale": "synthetic"} for a, r in bad.items()},
                     "model": "model-b", "response": p.rejected},
                ]
                if rng.random() < 0.5:
                    comps.reverse()
                rel = images(p)
                # the format finds `merged_images/{id}.jpg`; an id that is no safe file name (`../x`) gets
                # a hashed name, which the record then names itself
                where = {} if rel == f"merged_images/{p.sample_id}.jpg" else {"img_path": rel}
                yield {"id": p.sample_id, "prompt": p.prompt, "models": [c["model"] for c in comps],
                       "completions": comps, **where, **p.truth}

        return write_jsonl(rows(), out / "vlfeedback_80k.jsonl")
