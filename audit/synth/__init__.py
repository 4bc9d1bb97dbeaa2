"""Built-in synthetic multimodal preference environments with planted text-only cues.

`generate` yields pairs (image, prompt, chosen, rejected, ground truth); `synth` writes them in any
source format so every loader can be tested end to end. Row i depends only on (env, seed, i).
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from audit.config import SynthConfig
from audit.synth.cues import CUES
from audit.synth.envs import ENVIRONMENTS, Environment, get_env
from audit.synth.scenes import draw_scene, encode_png, make_question, make_scene

log = logging.getLogger(__name__)

JPEG_MAGIC = bytes([0xFF, 0xD8])

__all__ = ["SynthPair", "generate", "synth", "ENVIRONMENTS", "get_env"]


@dataclass
class SynthPair:
    """One synthetic pair, with the ground truth kept for evaluation."""

    sample_id: str
    scene_id: str
    image_png: bytes
    prompt: str
    chosen: str
    rejected: str
    truth: dict = field(default_factory=dict)  # env, task, cue, cue_on_chosen, cue_p

    @property
    def image_name(self) -> str:
        ext = "jpg" if self.image_png[:2] == JPEG_MAGIC else "png"
        return f"{self.scene_id}.{ext}"


def _env_key(name: str) -> int:
    # Environments draw different scenes for the same seed, so test sets never copy training pairs.
    return zlib.crc32(name.encode())


def generate(env: Environment | str, n: int, seed: int = 0, p: float | None = None,
             pairs_per_image: int = 1, image_size: int = 64, start: int = 0) -> Iterator[SynthPair]:
    """Yield pairs start..n-1 of an environment; each depends only on (env, seed, index)."""
    if isinstance(env, str):
        env = get_env(env)
    strength = env.p if p is None else p
    key = _env_key(env.name)
    last_scene: tuple[int, bytes, object] | None = None
    for i in range(start, n):
        s = i // pairs_per_image
        if last_scene is None or last_scene[0] != s:
            scene = make_scene(np.random.default_rng([seed, key, 0, s]))
            last_scene = (s, encode_png(draw_scene(scene, image_size)), scene)
        _, png, scene = last_scene
        q = make_question(scene, np.random.default_rng([seed, key, 1, i]))
        chosen, rejected = q.chosen, q.rejected
        truth = {"env": env.name, "task": q.task, "cue": env.cue or "none", "cue_on_chosen": None,
                 "cue_p": float(strength) if env.cue else None}
        if env.cue is not None:
            rng = np.random.default_rng([seed, key, 2, i])
            on_chosen = bool(rng.random() < strength)
            if on_chosen:
                chosen = CUES[env.cue](chosen, rng)
            else:
                rejected = CUES[env.cue](rejected, rng)
            truth["cue_on_chosen"] = on_chosen
        yield SynthPair(sample_id=f"{env.name}-s{seed}-{i:07d}", scene_id=f"{env.name}-s{seed}-img{s:07d}",
                        image_png=png, prompt=q.prompt, chosen=chosen, rejected=rejected, truth=truth)


def reencoded(png: bytes, scale: float = 1.5, quality: int = 85) -> bytes:
    """The same picture as another file: resized by `scale` and saved as JPEG."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(png)) as im:
        im = im.convert("RGB").resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=quality)
        return buf.getvalue()


def planted(pairs: Iterator[SynthPair], copies: Iterator[SynthPair]) -> Iterator[SynthPair]:
    """`pairs` with its first ones replaced by `copies` (another set's pairs: same texts, the picture
    re-encoded and resized, a sample id of this set). The copies' truth says `planted_copy_of`."""
    for copy in copies:
        pair = next(pairs, None)
        if pair is None:
            return
        yield SynthPair(sample_id=pair.sample_id, scene_id=copy.scene_id + "-copy", image_png=reencoded(copy.image_png),
                        prompt=copy.prompt, chosen=copy.chosen, rejected=copy.rejected,
                        truth={**copy.truth, "planted_copy_of": copy.sample_id})
    yield from pairs


def synth(cfg: SynthConfig) -> Path:
    """Write an environment in `cfg.format` under `cfg.out`; returns the main data file or folder."""
    from audit.io import claim_output
    from audit.sources import get_format

    env = get_env(cfg.env)
    fmt = get_format(cfg.format)
    with claim_output(cfg.out, "synth", overwrite=cfg.overwrite):
        if cfg.candidates:
            from audit.synth.candidates import write_candidates

            path = write_candidates(cfg, env)
            log.info("wrote %d prompts x %d candidates of `%s` (%s) to %s", cfg.n, cfg.candidates, env.name,
                     cfg.regime, path)
            return path
        return _synth(cfg, env, fmt)


def _synth(cfg: SynthConfig, env, fmt) -> Path:
    if cfg.holdout:
        # The held-out split continues the same stream past the training rows (from the next image, so
        # no picture is shared): the same distribution, never the same pairs.
        start = -(-cfg.n // cfg.pairs_per_image) * cfg.pairs_per_image
        held = generate(env, start + cfg.holdout, cfg.seed, cfg.p, cfg.pairs_per_image, cfg.image_size, start=start)
        hpath = fmt.write(held, cfg.out / "heldout", container=cfg.container, seed=cfg.seed)
        log.info("wrote %d held-out pairs of `%s` as %s to %s", cfg.holdout, env.name, fmt.name, hpath)
    out = cfg.out / "train" if cfg.holdout else cfg.out
    out.mkdir(parents=True, exist_ok=True)
    pairs = generate(env, cfg.n, cfg.seed, cfg.p, cfg.pairs_per_image, cfg.image_size)
    if cfg.plant:
        pairs = planted(pairs, generate(env, min(cfg.plant, cfg.n), cfg.plant_seed, cfg.p, cfg.pairs_per_image,
                                        cfg.image_size))
    path = fmt.write(pairs, out, container=cfg.container, seed=cfg.seed)
    log.info("wrote %d pairs of `%s` as %s to %s", cfg.n, env.name, fmt.name, path)
    return path
