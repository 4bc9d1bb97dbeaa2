"""VLFeedback (MMInstruction/VLFeedback): one prompt, several rated completions -> pairs.

Raw JSONL has `completions` as a list of dicts, the HF layout as a dict of lists; both are read.
Every two completions make a candidate pair ranked by the mean `Rating` over all aspects (as
Silkie's `make_vlfeedback_paired_dataset`); ties, unparsable and missing ratings make no pair and
are counted. The image is `img_path`, an embedded `image`, or `merged_images/{id}.jpg` under the root.

Written back (`write_back`), a record whose pairs are all kept comes back whole. When some of its
pairs are left out, its kept pairs come back in copies of the record that hold only some of its
completions (`models` to match): as few as a greedy cover needs, commonly one, chosen so that
ingesting them gives every kept pair once and no pair that was left out. A pair tagged `swap` comes
back alone, in a copy with its two completions whose annotations trade places. Per-pair fields
(weights) go into `pair_weights` ({chosen, rejected: completion positions, fields}), which the reader
turns back into those pairs' columns.
"""

from __future__ import annotations

import math
from itertools import combinations
from pathlib import Path
from typing import Any, Iterable, Iterator

from audit.sources.base import ImageRef, NotPaired, RawPair, SourceFormat, flip_flags, image_at
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


def _pair_fields(value: Any) -> dict[tuple[int, int], dict]:
    """`pair_weights` of a written-back copy: (chosen, rejected) completion positions -> that pair's fields."""
    out = {}
    for e in value if isinstance(value, list) else []:
        if isinstance(e, dict) and isinstance(e.get("chosen"), int) and isinstance(e.get("rejected"), int):
            out[(e["chosen"], e["rejected"])] = {k: v for k, v in e.items() if k not in ("chosen", "rejected")}
    return out


def _cover(plain: dict[int, dict], parts: dict[int, tuple[int, int]]) -> list[tuple[list[int], list[int]]]:
    """Completion sets that make exactly the pairs `plain`, each once: (completions, pairs it holds).
    Greedy: start from a pair not yet written, add each completion whose pairs with the set are all
    kept and unwritten (completions that make no pair with each other, ties, may meet freely)."""
    by_edge = {frozenset(p): k for k, p in parts.items()}
    done: set[int] = set()
    sets = []
    for k in plain:
        if k in done:
            continue
        members, held = list(parts[k]), [k]
        done.add(k)
        for c in sorted({c for j in plain if j not in done for c in parts[j]} - set(members)):
            new = [by_edge.get(frozenset((c, m))) for m in members]
            if all(j is None or (j in plain and j not in done) for j in new):
                members.append(c)
                fresh = [j for j in new if j is not None]
                held += fresh
                done.update(fresh)
        sets.append((sorted(members), held))
    return sets


def _record(rec: dict, keep: list[int] | None, fields: dict[int, dict], parts: dict, swapped: bool = False) -> dict:
    """A copy of `rec` with the completions `keep` (None: all), `swapped`: its two completions'
    annotations exchanged; `pair_weights` (its own, and the pairs' `fields`) at the copy's positions."""
    if keep is None and not swapped and not any(fields.values()):
        return dict(rec)
    comps = _completions(rec.get("completions"))
    keep = list(range(len(comps))) if keep is None else keep
    at = {c: i for i, c in enumerate(keep)}
    out = dict(rec)
    if len(keep) != len(comps) or swapped:
        chosen = [dict(comps[i]) for i in keep]
        if swapped:
            a, b = chosen
            a["annotations"], b["annotations"] = b.get("annotations"), a.get("annotations")
        value = rec["completions"]
        out["completions"] = chosen if isinstance(value, list) else {
            k: ([c.get(k) for c in chosen] if isinstance(v, list) else v) for k, v in value.items()}
        if isinstance(rec.get("models"), list) and len(rec["models"]) == len(comps):
            out["models"] = [rec["models"][i] for i in keep]
    given = _pair_fields(rec.get("pair_weights"))
    for k, f in fields.items():
        if f:
            given[parts[k]] = {**given.get(parts[k], {}), **f}
    entries = [{"chosen": at[hi], "rejected": at[lo], **f} for (hi, lo), f in given.items() if hi in at and lo in at]
    if swapped:
        entries = [{**e, "chosen": e["rejected"], "rejected": e["chosen"]} for e in entries]
    if entries or "pair_weights" in rec:
        out["pair_weights"] = entries
    return out


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
        image = image_at(rec, "img_path", "image")
        if image is None and rec.get("id") is not None:
            image = ImageRef(path=f"merged_images/{rec['id']}.jpg", fallbacks=(f"{rec['id']}.jpg",))
        aspects = sorted({a for c in comps if isinstance(c.get("annotations"), dict) for a in c["annotations"]})
        ratings = [_mean_rating(c.get("annotations"), aspects) for c in comps]
        extra = self.rest(rec, ("id", "prompt", "completions", "img_path", "image", "pair_weights"))
        given = _pair_fields(rec.get("pair_weights"))
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
                       "chosen_rating": max(ri, rj), "rejected_rating": min(ri, rj), **given.get((hi, lo), {})},
                parts=(hi, lo))

    def write_back(self, rec: dict, index: int, keep: dict[int, dict], swap: set[int],
                   avoid: set[int] | None) -> list[dict]:
        items = list(self.to_pairs(rec, index))
        parts = {k: it.parts for k, it in enumerate(items) if isinstance(it, RawPair) and it.parts}
        plain = {k: keep[k] for k in sorted(keep) if k not in swap}
        out = [flip_flags(_record(rec, sorted(parts[k]), {k: keep[k]}, parts, swapped=True)) for k in sorted(swap)]
        if not plain:
            return out
        if not swap and avoid is not None and not (avoid & parts.keys()):
            return [_record(rec, None, plain, parts), *out]     # nothing left out: the record whole
        return [_record(rec, s, {k: plain[k] for k in held}, parts) for s, held in _cover(plain, parts)] + out

    def point_image(self, rec: dict, key: tuple | None, rel: str) -> None:
        if key is None:          # the picture was `merged_images/{id}.jpg`: the copy names its own
            rec["img_path"] = rel
        else:
            super().point_image(rec, key, rel)

    def added_fields(self, fields: dict) -> dict:
        import pyarrow as pa

        entry = pa.struct([("chosen", pa.int64()), ("rejected", pa.int64()), *fields.items()])
        return {"img_path": pa.string(), **({"pair_weights": pa.list_(entry)} if fields else {})}

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
