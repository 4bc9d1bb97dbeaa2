"""The inputs stage of `score`: encode what the selected probes need into the on-disk caches, once.

Four kinds of cached input, each built only when a probe declares it in `needs`:
- `text`: text-encoder embeddings of every distinct prompt, chosen and rejected text;
- `tokens`: the same texts as static token embeddings of the text encoder's vocabulary (no encoder run);
- `image`: image-encoder features of every distinct image;
- `rm`: the user's reward model's rewards for (prompt, response, image) and with a blank image.

Pass 1 reads the texts window by window for their content keys (16 bytes each) and the cue features;
the keys say which window first holds each distinct item. Pass 2 (only where the cache lacks
something) encodes, per window, the items first seen there, in the cache's canonical chunks.
Data-parallel: each rank fills its share of the chunks (`fill(shard)`); rank 0 then has them all.
An interrupted run resumes from the chunks already written.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from audit.context import ScoreContext
from audit.encoders.cache import KEY, EmbeddingCache, as_keys, content_key
from audit.probes.cues import CUE_FUNCS, cue_differences

log = logging.getLogger(__name__)


@dataclass
class CachedInput:
    """One kind of cached input: its cache, the flat keys of the scored rows, how to encode a list of
    items, the size of an item (for batching), and how to list a window's items."""

    cache: EmbeddingCache
    keys: np.ndarray
    encode: Callable
    size: Callable
    items_of: Callable
    columns: list[str]                       # the table columns `items_of` reads
    key_major: bool                          # keys laid out (per_row, m) ravelled instead of (m, per_row)
    locate: Callable[["CachedInput"], Any]   # what the probes get, once the cache is full


def first_seen(keys: np.ndarray) -> np.ndarray:
    """Per key: is this its first occurrence? (Each distinct item is encoded in exactly one window.)"""
    first = np.zeros(len(keys), dtype=bool)
    first[np.unique(keys, return_index=True)[1]] = True
    return first


def _flat_positions(key_major: bool, pos: np.ndarray, m: int, per_row: int) -> np.ndarray:
    """Indices into a cache's flat key array for the rows `pos`, in the order its `items_of` lists them."""
    if key_major:             # (per_row, m) ravelled: e.g. prompts, then chosen, then rejected
        return np.concatenate([j * m + pos for j in range(per_row)])
    return (pos[:, None] * per_row + np.arange(per_row)).ravel()   # (m, per_row) ravelled


def read_keys(ctx: ScoreContext, needs: set[str]) -> dict[str, np.ndarray]:
    """Pass 1: content keys of what `needs` asks for, and the cue features (into `ctx`)."""
    cfg, m = ctx.cfg, ctx.m
    text_keys = np.zeros((3, m), dtype=KEY)                  # prompt, chosen, rejected
    keys = {"text": text_keys, "tokens": text_keys}
    if "image" in needs:
        keys["image"] = np.zeros(m, dtype=KEY)
    if "rm" in needs:
        keys["rm"] = np.zeros((m, 4), dtype=KEY)             # chosen, rejected, blank chosen, blank rejected
    ctx.cue_diff = np.zeros((m, len(CUE_FUNCS)), dtype=np.float64)
    pass1 = ["prompt", "chosen", "rejected", "image_id"] + (["image_path"] if "rm" in needs else [])
    for pos, cols in ctx.rows.windows(pass1):
        p, c, r = cols["prompt"], cols["chosen"], cols["rejected"]
        for j, texts in enumerate((p, c, r)):
            text_keys[j, pos] = as_keys([content_key(x) for x in texts])
        ctx.cue_diff[pos] = cue_differences(p, c, r)
        if "image" in needs:
            keys["image"][pos] = as_keys([bytes.fromhex(i) for i in cols["image_id"]])
        if "rm" in needs:
            from audit.probes.reward_model import blank_refs, item_keys

            blanks = blank_refs(cols["image_path"], cfg.rm_blank, ctx.image_size)
            keys["rm"][pos] = item_keys(p, c, r, cols["image_id"], blanks).reshape(-1, 4)
    ctx.text_keys = text_keys
    return keys


def _text_input(ctx: ScoreContext, keys: np.ndarray) -> CachedInput:
    from audit.encoders.text import load_text_encoder

    cfg = ctx.cfg
    return _texts(load_text_encoder(cfg.text_encoder, pooling=cfg.pooling, device=ctx.device, batch_size=cfg.batch_size,
                                    max_length=cfg.max_length, trust_remote_code=cfg.trust_remote_code), keys, ctx)


def _tokens_input(ctx: ScoreContext, keys: np.ndarray) -> CachedInput:
    from audit.encoders.tokens import TokenEmbedder

    return _texts(TokenEmbedder(ctx.cfg.text_encoder, trust_remote_code=ctx.cfg.trust_remote_code), keys, ctx)


def _texts(enc, keys: np.ndarray, ctx: ScoreContext) -> CachedInput:
    """Embeddings of every distinct prompt, chosen and rejected text, by any encoder with `fingerprint`
    and `encode` (the text encoder, or the static token embeddings)."""
    from audit.probes.text_embedding import PairEmbeddings

    return CachedInput(EmbeddingCache(ctx.cache_root, enc.fingerprint), keys.ravel(), enc.encode, len,
                       lambda pos, cols: cols["prompt"] + cols["chosen"] + cols["rejected"],
                       ["prompt", "chosen", "rejected"], True,
                       lambda ci: (enc, PairEmbeddings(ci.cache, *keys)))


def _image_input(ctx: ScoreContext, keys: np.ndarray) -> CachedInput:
    from audit.encoders.image import load_image_encoder

    ienc = load_image_encoder(ctx.cfg.image_encoder, device=ctx.device, trust_remote_code=ctx.cfg.trust_remote_code)

    def locate(ci: CachedInput):
        part, row = ci.cache.locate(keys)
        return ienc, lambda i: ci.cache.gather(part[i], row[i])

    return CachedInput(EmbeddingCache(ctx.cache_root, ienc.fingerprint), keys,
                       lambda paths: ienc.encode([ctx.resolve(x).read_bytes() for x in paths]), lambda _: 0,
                       lambda pos, cols: cols["image_path"], ["image_path"], False, locate)


def _rm_input(ctx: ScoreContext, keys: np.ndarray) -> CachedInput:
    from audit.probes.reward_model import RMEncoder, blank_refs, load_reward_model, window_items

    cfg, m = ctx.cfg, ctx.m
    scorer = load_reward_model(cfg.rm, device=ctx.device, max_length=cfg.rm_max_length,
                               trust_remote_code=cfg.trust_remote_code, compile=cfg.compile)
    rm_enc = RMEncoder(scorer, ctx.load_image, ctx.image_size, cfg.token_budget, cfg.workers)

    def locate(ci: CachedInput):
        r = ci.cache.get(ci.keys)[:, 0].astype(np.float64).reshape(m, 4)
        return scorer, {"margin": r[:, 0] - r[:, 1], "blank_margin": r[:, 2] - r[:, 3], "stats": rm_enc.stats}

    return CachedInput(EmbeddingCache(ctx.cache_root, scorer.fingerprint), keys.ravel(), rm_enc.encode, rm_enc.size,
                       lambda pos, cols: window_items(cols, blank_refs(cols["image_path"], cfg.rm_blank, ctx.image_size)),
                       ["prompt", "chosen", "rejected", "image_path", "image_id"], False, locate)


KINDS = {"text": _text_input, "tokens": _tokens_input, "image": _image_input, "rm": _rm_input}


class InputStore:
    """The cached inputs the selected probes need: keys (pass 1), filled caches (pass 2), located."""

    def __init__(self, ctx: ScoreContext, needs: set[str]) -> None:
        unknown = needs - set(KINDS)
        if unknown:
            raise ValueError(f"unknown probe input(s) {sorted(unknown)}; known: {sorted(KINDS)}")
        self.ctx = ctx
        keys = read_keys(ctx, needs)
        log.info("pass 1 done (keys, cue features)")
        self.inputs = {kind: KINDS[kind](ctx, keys[kind]) for kind in KINDS if kind in needs}

    def fill(self, shard: tuple[int, int]) -> None:
        """Pass 2: encode what the caches lack (this rank's chunks of it)."""
        m, cfg = self.ctx.m, self.ctx.cfg
        todo = {}
        for name, ci in self.inputs.items():
            ci.cache.refresh()
            if not ci.cache.has(np.unique(ci.keys)).all():
                todo[name] = (first_seen(ci.keys), len(ci.keys) // m)
        if not todo:
            return
        offset = dict.fromkeys(todo, 0)
        columns = sorted({c for name in todo for c in self.inputs[name].columns})
        for pos, window in self.ctx.rows.windows(columns):
            for name, (first, per_row) in todo.items():
                ci = self.inputs[name]
                flat = _flat_positions(ci.key_major, pos, m, per_row)
                sel = first[flat]
                if not sel.any():
                    continue
                items = ci.items_of(pos, window)
                offset[name] += ci.cache.fill([items[i] for i in np.flatnonzero(sel)], ci.keys[flat[sel]], ci.encode,
                                              chunk=cfg.chunk, size=ci.size, shard=shard, offset=offset[name])

    def located(self) -> dict[str, Any]:
        """What each probe reads: cache positions instead of keys (the keys are dropped)."""
        out = {name: ci.locate(ci) for name, ci in self.inputs.items()}
        self.inputs.clear()           # the keys (and the closures over them) are no longer needed
        self.ctx.text_keys = None     # the fine-tuned probe read them in `prepare`
        return out
