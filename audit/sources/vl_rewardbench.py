"""VL-RewardBench (MMInstruction/VL-RewardBench): `query`, two `response`s and `human_ranking`
([0, 1]: response[0] preferred). `query_source` spellings are normalised into `query_source_norm`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator

from audit.sources.base import TRUTH_SPEC, RawPair, SourceFormat, hf_image, image_at
from audit.sources.writers import write_parquet

SPEC = {"id": "string", "query": "string", "response": ["string"], "image": "image",
        "human_ranking": ["int64"], "models": ["string"], "judge": "string", "rationale": "string",
        "query_source": "string", "meta": "string", "human_error_analysis": ["string"], "ground_truth": "string"}


class VLRewardBench(SourceFormat):
    name = "vl-rewardbench"
    summary = "`query`, two `response`s, `human_ranking` and an embedded `image` (VL-RewardBench)"
    signature = ("query", "response", "human_ranking")
    oriented = ("human_ranking",)

    def to_pairs(self, rec: dict, index: int) -> Iterator[RawPair]:
        sid = self.sample_id(rec, index, "id")
        image = image_at(rec, "image")
        extra = self.rest(rec, ("query", "response", "image", "human_ranking"))
        extra["human_ranking"] = rec.get("human_ranking")
        qs = rec.get("query_source")
        extra["query_source_norm"] = (qs.strip().lower() or "unknown") if isinstance(qs, str) else "unknown"
        responses, ranking = rec.get("response"), rec.get("human_ranking")
        if not isinstance(responses, list) or len(responses) != 2:
            yield RawPair(sid, rec.get("query"), image=image, extra=extra, status="bad_row",
                          detail="`response` must hold exactly two candidates")
            return
        if not isinstance(ranking, list) or sorted(ranking) != [0, 1]:
            yield RawPair(sid, rec.get("query"), image=image, extra=extra, status="bad_row",
                          detail=f"`human_ranking` must be [0, 1] or [1, 0], got {ranking!r}")
            return
        best = ranking.index(0)
        yield RawPair(sid, rec.get("query"), responses[best], responses[1 - best], image, extra=extra)

    def swapped(self, rec: dict) -> dict:
        """The other response preferred: `human_ranking` reversed, the responses where they were."""
        return {**rec, "human_ranking": [1 - r for r in rec["human_ranking"]]}

    def write(self, pairs: Iterable, out: Path, seed: int = 0, extra_spec: dict | None = None, **_: Any) -> Path:
        import numpy as np

        spec = {**SPEC, **(TRUTH_SPEC if extra_spec is None else extra_spec)}

        def rows() -> Iterator[dict]:
            for k, p in enumerate(pairs):
                first = bool(np.random.default_rng([seed, 11, k]).random() < 0.5)
                yield {"id": p.sample_id, "query": p.prompt,
                       "response": [p.chosen, p.rejected] if first else [p.rejected, p.chosen],
                       "image": hf_image(p.image_png), "human_ranking": [0, 1] if first else [1, 0],
                       "models": [], "judge": "synthetic", "rationale": "", "query_source": "Synthetic",
                       "meta": "{}", "human_error_analysis": [], "ground_truth": "", **p.truth}

        return write_parquet(rows(), out / "data" / "test-00000-of-00001.parquet", spec)
