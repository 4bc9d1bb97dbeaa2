"""Candidate responses for Best-of-n on the synthetic world, from a known policy.

For a held-out scene and question, the policy's support is enumerated: one text per (response
template, answer value, style), where the style is none or one variant of a planted cue. Gold is 1
when the value is right about the picture, whatever the style, so style is gold-neutral by
construction. A regime says only how the cue goes with correctness:

| regime  | P(cue given right) | P(cue given wrong) | P(right given cue) |
|---------|-------------------:|-------------------:|-------------------:|
| clean   | 0                  | 0                  | -                  |
| aligned | 0.30               | 0.10               | 0.75               |
| neutral | 0.20               | 0.20               | 0.50               |
| adverse | 0.10               | 0.30               | 0.25 (the lure: wrong but stylish) |

with P(right) = 0.5 and the wrong values uniform. `bench` scores the whole support once per reward
model and computes best-of-n exactly (`audit.bon`); `synth --candidates M` samples M responses per
prompt from it and writes a candidates file for `eval --best-of-n`.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from audit.config import BON_REGIMES
from audit.synth.cues import BULLET_REMARKS, CLOSINGS, CUES, LEAD_INS
from audit.synth.scenes import (_TEMPLATES, _answer_values, answer_text, draw_scene, encode_png, make_question,
                                make_scene)

# regime -> (P(cue | right), P(cue | wrong)); the names are `audit.config.BON_REGIMES`, in that order
REGIMES = dict(zip(BON_REGIMES, ((0.0, 0.0), (0.30, 0.10), (0.20, 0.20), (0.10, 0.30))))
P_RIGHT = 0.5
CLEAN_STYLE = "leadin"     # a cue-free training environment is probed with the lead-in style
_VERBOSE_PAIRS = ((0, 1), (1, 2), (2, 3), (3, 4), (4, 0))   # 5 of the 20 ordered elaboration pairs


class _Variant:
    """Stands in for the random generator a cue function draws from, so that it writes one given
    variant: the cue's own code writes the text, enumerated instead of drawn."""

    def __init__(self, picks: tuple[int, ...]) -> None:
        self.picks = picks

    def integers(self, n: int) -> int:
        return self.picks[0]

    def choice(self, n: int, size: int, replace: bool = False) -> np.ndarray:
        return np.array(self.picks[:size])


def style_variants(cue: str) -> list[tuple[int, ...]]:
    """The variants of a cue the support enumerates (one for `aside`, which has a single form)."""
    if cue == "verbose":
        return list(_VERBOSE_PAIRS)
    if cue == "aside":
        return [()]
    return [(k,) for k in range(len({"leadin": LEAD_INS, "closing": CLOSINGS, "markdown": BULLET_REMARKS}[cue]))]


def style_cue(env_cue: str | None) -> str:
    return env_cue or CLEAN_STYLE


def bon_seed(cue: str) -> int:
    """Seed base of the held-out prompts: clear of the training seeds (small) and of bench's test
    sets (1,000,000 + crc32(name) % 1,000,000)."""
    return 2_000_000 + zlib.crc32(f"bon:{cue}".encode()) % 1_000_000


@dataclass
class PromptSupport:
    """One held-out prompt and every response the policy can give to it."""

    sample_id: str
    scene_id: str
    image_png: bytes
    prompt: str
    task: str
    answer: str
    texts: list[str]
    correct: np.ndarray       # (K,) bool: the value is right about the picture
    cued: np.ndarray          # (K,) bool: the text carries the cue
    n_values: int
    n_variants: int

    @property
    def image_name(self) -> str:
        return f"{self.scene_id}.png"

    def probs(self, regime: str, p_right: float = P_RIGHT) -> np.ndarray:
        """p(y) = P(value) x 1/templates x P(style | right or wrong)."""
        on_right, on_wrong = REGIMES[regime]
        p_value = np.where(self.correct, p_right, (1.0 - p_right) / (self.n_values - 1))
        p_cue = np.where(self.correct, on_right, on_wrong)
        p_style = np.where(self.cued, p_cue / self.n_variants, 1.0 - p_cue)
        return p_value * p_style / len(_TEMPLATES[self.task])


def prompt_supports(cue: str, n: int, seed: int = 0, image_size: int = 64) -> Iterator[PromptSupport]:
    """The supports of held-out prompts 0..n-1 for the style `cue`; prompt i depends only on (cue, seed, i)."""
    base = bon_seed(cue)
    variants = style_variants(cue)
    for i in range(n):
        scene = make_scene(np.random.default_rng([base, seed, 0, i]))
        q = make_question(scene, np.random.default_rng([base, seed, 1, i]))
        slots = dict(q.slots)
        values = _answer_values(q.task)
        texts, correct, cued = [], [], []
        for t in range(len(_TEMPLATES[q.task])):
            for v in values:
                plain = answer_text(q.task, t, v, slots)
                for styled, text in [(False, plain)] + [(True, CUES[cue](plain, _Variant(k))) for k in variants]:
                    texts.append(text)
                    correct.append(v == q.answer)
                    cued.append(styled)
        yield PromptSupport(f"bon-{cue}-s{seed}-{i:07d}", f"bon-{cue}-s{seed}-img{i:07d}",
                            encode_png(draw_scene(scene, image_size)), q.prompt, q.task, q.answer, texts,
                            np.array(correct), np.array(cued), len(values), len(variants))


SPEC = {"group_id": "string", "prompt": "string", "image": "image", "responses": ["string"], "correct": ["bool"],
        "cued": ["bool"], "task": "string", "cue": "string", "regime": "string"}


def candidate_rows(cue: str, regime: str, n: int, m: int, seed: int, image_size: int,
                   image_value=None) -> Iterator[dict]:
    """One row per prompt: M responses drawn i.i.d. from the regime's policy (seeded per prompt), with
    their `correct` and `cued` flags. `image_value(support)` gives the row's image cell."""
    for i, sup in enumerate(prompt_supports(cue, n, seed, image_size)):
        rng = np.random.default_rng([bon_seed(cue), seed, 2, zlib.crc32(regime.encode()), i])
        pick = rng.choice(len(sup.texts), size=m, replace=True, p=sup.probs(regime))
        yield {"group_id": sup.sample_id, "prompt": sup.prompt,
               "image": image_value(sup) if image_value else {"bytes": sup.image_png, "path": sup.image_name},
               "responses": [sup.texts[k] for k in pick], "correct": sup.correct[pick].tolist(),
               "cued": sup.cued[pick].tolist(), "task": sup.task, "cue": cue, "regime": regime}


def write_candidates(cfg, env) -> Path:
    """`synth --candidates M`: a candidates file of `cfg.n` prompts (JSONL with images beside, JSON,
    Parquet with embedded images, or an HF folder) for `eval --best-of-n`."""
    from audit.sources.writers import ImageFiles, write_hf_folder, write_json_array, write_jsonl, write_parquet

    cue = style_cue(env.cue)
    args = (cue, cfg.regime, cfg.n, cfg.candidates, cfg.seed, cfg.image_size)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.container in ("jsonl", "json"):
        files = ImageFiles(out, "images")
        rows = candidate_rows(*args, image_value=files)
        if cfg.container == "jsonl":
            return write_jsonl(rows, out / "candidates.jsonl")
        return write_json_array(rows, out / "candidates.json")
    if cfg.container == "hf":
        return write_hf_folder(candidate_rows(*args), out / "candidates", SPEC)
    return write_parquet(candidate_rows(*args), out / "candidates.parquet", SPEC)
