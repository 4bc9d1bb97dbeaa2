"""`score`: the audited table. Cross-fits the text-only shortcut models and the multimodal probe,
then writes SFC, weights, shortcut flags and one column per cue beside every pair, plus summary.json.

Flow: pairs table -> groups and folds -> cue features and cue probe -> text embeddings (cached) ->
text probe -> image features (cached) -> multimodal probe (or external scores) -> SFC, weights ->
audited.parquet + summary.json, written atomically. Unique texts and images are encoded once.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from audit import metrics, schema
from audit.bt import LinearBT, calibrate, cross_fit
from audit.config import IngestConfig, ScoreConfig, to_dict
from audit.encoders.cache import EmbeddingCache, content_key
from audit.errors import FormatError
from audit.folds import assign_folds, group_ids
from audit.io import atomic_path, versions, write_json_atomic
from audit.probes.cues import CUE_FUNCS, cue_differences, fit_cue_probe
from audit.probes.reward_model import rm_summary
from audit.probes.text_embedding import text_feature_rows
from audit.schemes import SCHEMES, weights

log = logging.getLogger(__name__)

AUDITED_FILE = "audited.parquet"
SUMMARY_FILE = "summary.json"
AUDIT_COLUMNS = ("text_margin", "text_prob", "text_loss", "mm_margin", "mm_prob", "mm_loss", "sfc", "weight",
                 "is_shortcut", "fold", "cue_margin")


def _pairs_dir(cfg: ScoreConfig, rank: int = 0) -> Path:
    """The pairs folder to score: SOURCE itself, or SOURCE ingested into AUDIT_DIR/pairs (by rank 0;
    the other ranks of a data-parallel run wait for it)."""
    from audit.dist import barrier

    src = cfg.source
    if (src / schema.PAIRS_FILE).is_file() and (src / schema.REPORT_FILE).is_file():
        return src
    out = cfg.out / "pairs"
    if rank == 0:
        from audit.ingest import ingest

        ingest(IngestConfig(source=src, out=out, format=cfg.format, image_root=cfg.image_root))
    barrier()
    return out


def score(cfg: ScoreConfig) -> dict:
    """Run the audit; returns the summary (also written to AUDIT_DIR/summary.json).

    Under `torchrun` / `accelerate launch` every rank encodes its share of the texts, images and
    reward-model inputs into the shared cache, and rank 0 then fits the heads and writes the outputs
    (the other ranks return {"rank": r})."""
    import polars as pl

    from audit.dist import barrier, launched_world, setup

    rank, world = setup("gloo") if launched_world() > 1 else (0, 1)
    shard = (rank, world)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    peak_rss: dict[str, float] = {}

    def lap(name: str, t0: float) -> float:
        import resource

        now = time.perf_counter()
        timings[name] = round(now - t0, 3)
        peak_rss[name] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)   # MiB so far
        return now

    cfg.out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    pairs_dir = _pairs_dir(cfg, rank)
    t = lap("ingest", t)
    table = pl.read_parquet(pairs_dir / schema.PAIRS_FILE)
    missing = [c for c in schema.PAIRS_COLUMNS if c not in table.columns]
    if missing:
        raise FormatError(f"`{pairs_dir / schema.PAIRS_FILE}` lacks column(s) {', '.join(missing)}: "
                          "it is not a pairs table; run `shortcut-audit ingest` first")
    n = table.height
    ok = (table["status"] == schema.OK).to_numpy()
    idx = np.where(ok)[0]
    m = idx.size
    if m < 2 * cfg.folds:
        raise FormatError(f"only {m} scorable (`ok`) pairs in `{pairs_dir}`; cross-fitting with "
                          f"{cfg.folds} folds needs at least {2 * cfg.folds} (see the status column)")
    sub = table[idx]
    prompts, chosen, rejected = sub["prompt"].to_list(), sub["chosen"].to_list(), sub["rejected"].to_list()

    # Groups and folds: no pair is scored by a head that saw it or a sibling (same image/row/prompt).
    groups = group_ids(sub["image_id"].to_list(), sub["sample_id"].to_list(), sub["prompt_id"].to_list())
    n_groups = int(groups.max()) + 1
    if n_groups < cfg.folds:
        raise FormatError(f"the {m} scorable pairs form only {n_groups} group(s) (pairs sharing an image, a source "
                          f"row or a specific prompt stay together); cross-fitting needs at least `--folds` "
                          f"{cfg.folds} groups: lower `--folds` or add data")
    folds = assign_folds(groups, cfg.folds, cfg.seed)
    t = lap("folds", t)

    # ---- encoding: texts, images and reward-model inputs into the on-disk cache -----------------
    # Data-parallel: each rank fills its share of the cache chunks; rank 0 then has them all.
    from audit.dist import local_device
    from audit.encoders.text import load_text_encoder, resolve_device

    device = local_device(resolve_device(cfg.device))
    cache_root = cfg.cache_dir or (cfg.out / "cache")
    use_probe = not (cfg.mm_scores or cfg.rm)
    need_text_emb = cfg.text_probe == "embedding" or use_probe
    image_ids, image_paths = sub["image_id"].to_list(), sub["image_path"].to_list()
    first_path = dict(zip(image_ids[::-1], image_paths[::-1]))
    roots = None

    def resolve(path: str) -> Path:
        """An image path of the pairs table, checked against the recorded image roots."""
        nonlocal roots
        from audit.images import image_roots, resolve_image

        roots = roots if roots is not None else image_roots(pairs_dir)
        return resolve_image(pairs_dir, path, allowed_roots=roots)

    def load_image(ref: str):
        from audit.probes.reward_model import item_image
        from audit.vlm import open_image

        return item_image(ref, lambda path: open_image(resolve(path).read_bytes()))

    def image_size(path: str) -> tuple[int, int]:
        from PIL import Image

        with Image.open(resolve(path)) as im:
            return im.size

    def encode_all(part: tuple[int, int]) -> dict:
        """Fill the caches (this rank's share); with part=(0, 1) return the arrays."""
        got: dict = {}
        if need_text_emb:
            enc = load_text_encoder(cfg.text_encoder, pooling=cfg.pooling, device=device, batch_size=cfg.batch_size,
                                    max_length=cfg.max_length, trust_remote_code=cfg.trust_remote_code)
            tcache = EmbeddingCache(cache_root, enc.fingerprint)
            texts = prompts + chosen + rejected
            tkeys = [content_key(s) for s in texts]
            tcache.fill(texts, tkeys, enc.encode, chunk=cfg.chunk, shard=part)
            del texts
            if part[1] == 1:   # positions in the (memory-mapped) cache; rows are gathered chunk by chunk
                from audit.probes.text_embedding import PairEmbeddings

                got["text"] = (enc, PairEmbeddings(tcache, tkeys[:m], tkeys[m:2 * m], tkeys[2 * m:]))
            del tkeys
        if use_probe:
            from audit.encoders.image import load_image_encoder

            ienc = load_image_encoder(cfg.image_encoder, device=device, trust_remote_code=cfg.trust_remote_code)
            icache = EmbeddingCache(cache_root, ienc.fingerprint)
            uniq = sorted(first_path)
            keys = [bytes.fromhex(i) for i in uniq]
            icache.fill(uniq, keys, lambda ids: ienc.encode([resolve(first_path[i]).read_bytes() for i in ids]),
                        size=lambda _: 0, chunk=cfg.chunk, shard=part)
            if part[1] == 1:
                ipart, irow = icache.locate([bytes.fromhex(i) for i in image_ids])
                got["image"] = (ienc, lambda idx: icache.gather(ipart[idx], irow[idx]))
        if cfg.rm:
            from audit.probes.reward_model import load_reward_model, rm_margins

            scorer = load_reward_model(cfg.rm, device=device, max_length=cfg.rm_max_length,
                                       trust_remote_code=cfg.trust_remote_code)
            rcache = EmbeddingCache(cache_root, scorer.fingerprint)
            got["rm"] = (scorer, rm_margins(scorer, prompts, chosen, rejected, image_paths, image_ids, load_image,
                                            image_size, rcache, cfg.token_budget, cfg.workers, chunk=cfg.chunk,
                                            shard=part, blank=cfg.rm_blank))
        if cfg.text_probe == "finetune":
            from audit.probes.finetune import finetune_margins

            got["finetune"] = finetune_margins(cfg, prompts, chosen, rejected, folds, cache_root, device, shard=part)
        return got

    if world > 1:
        encode_all(shard)
        barrier()
        if rank != 0:
            return {"rank": rank, "world_size": world}
    encoded = encode_all((0, 1))          # rank 0 (or a single process): everything is cached now
    t = lap("encode", t)

    # Cue probe: interpretable differences, cross-fitted BT logistic on standardised features.
    cue_diff = cue_differences(prompts, chosen, rejected)
    cue_margin, cues, cue_l2 = fit_cue_probe(cue_diff, folds, groups, cfg.seed)
    t = lap("cue_probe", t)

    # Text probe: BT head on [e_c - e_r, (e_c - e_r) * e_p] of frozen embeddings, or a fine-tuned text RM.
    if need_text_emb:
        enc, emb = encoded["text"]
    text_l2 = None
    if cfg.text_probe == "finetune":
        text_margin = encoded["finetune"]["margin"]
        text_info = {"probe": "finetune", **encoded["finetune"]["info"]}
    else:
        text_margin, text_l2 = cross_fit(LinearBT, text_feature_rows(emb), folds, groups, seed=cfg.seed,
                                         max_fit=cfg.fit_pairs)
        text_info = {"probe": "embedding", "name": cfg.text_encoder, "pooling": enc.pooling,
                     "fingerprint": enc.fingerprint}
    t = lap("text_probe", t)

    # Multimodal side: the user's RM (audited with a blank image), its scores, or the bilinear probe.
    mm_l2: float | None = None
    image_info: dict = {}
    rm_cols: dict = {}
    rm_info = None
    if cfg.rm:
        scorer, res = encoded["rm"]
        mm_margin = res["margin"]
        rm_cols = {"rm_margin": res["margin"], "rm_blank_margin": res["blank_margin"]}
        rm_info = {"model": cfg.rm, "head": scorer.head_source, "fingerprint": scorer.fingerprint,
                   "blank_image": "white 224x224 RGB" if cfg.rm_blank == "reference" else "white, each image's own size",
                   "token_budget": cfg.token_budget, **res["stats"]}
        image_info = {"mm": "reward model", "rm": cfg.rm}
    elif cfg.mm_scores:
        from audit.probes.external import external_margins

        mm_margin = external_margins({c: sub[c].to_numpy() for c in sub.columns}, cfg.mm_scores)
        image_info = {"mm": "external", "columns": cfg.mm_scores}
    else:
        from audit.probes.multimodal import multimodal_margins

        ienc, image_rows = encoded["image"]
        mm_margin, mm_l2 = multimodal_margins(image_rows, lambda i: emb.take(i, "c")[0], lambda i: emb.take(i, "r")[0],
                                              m, folds, groups, text_margin, cfg.seed, dims=cfg.mm_dims,
                                              max_fit=cfg.fit_pairs)
        image_info = {"mm": f"bilinear probe on {cfg.mm_dims}x{cfg.mm_dims} PCA dims (product of experts with the text margin)",
                      "image_encoder": cfg.image_encoder, "fingerprint": ienc.fingerprint}
    t = lap("mm_probe", t)

    # Temperature scaling (cross-fitted) so that probabilities mean what they say.
    text_margin, text_temp = calibrate(text_margin, folds)
    mm_margin, mm_temp = calibrate(mm_margin, folds) if use_probe else (mm_margin, None)
    cue_margin, cue_temp = calibrate(cue_margin, folds)
    text_prob, text_loss = metrics.sigmoid(text_margin), metrics.bt_loss(text_margin)
    mm_prob, mm_loss = metrics.sigmoid(mm_margin), metrics.bt_loss(mm_margin)
    sfc = metrics.sfc(text_loss, mm_loss)
    ones = np.ones(m, dtype=bool)
    scheme_kw = dict(text_prob=text_prob, sfc=sfc, clip=cfg.clip, ipw_floor=cfg.ipw_floor, jtt_factor=cfg.jtt_factor)
    all_weights = {s: weights(s, ones, **scheme_kw) for s in SCHEMES}
    weight = all_weights[cfg.scheme]

    def full(values: np.ndarray, fill=None, dtype=None):
        out = np.full(n, np.nan if fill is None else fill, dtype=dtype or np.float64)
        out[idx] = values
        return out

    cols = {
        "text_margin": full(text_margin), "text_prob": full(text_prob), "text_loss": full(text_loss),
        "mm_margin": full(mm_margin), "mm_prob": full(mm_prob), "mm_loss": full(mm_loss), "sfc": full(sfc),
        "weight": full(weight, fill=0.0), "cue_margin": full(cue_margin),
        **{k: full(v) for k, v in rm_cols.items()},
    }
    audit_df = pl.DataFrame({k: pl.Series(k, v).fill_nan(None) for k, v in cols.items()})
    is_short = np.zeros(n, dtype=bool)
    is_short[idx] = text_prob >= cfg.threshold
    extra = []
    if rm_cols:   # the preferred response changes when the image is blanked (null where not scored)
        flip = np.zeros(n, dtype=bool)
        flip[idx] = (rm_cols["rm_margin"] > 0) != (rm_cols["rm_blank_margin"] > 0)
        extra.append(pl.Series("rm_flip", flip).scatter(np.where(~ok)[0], None) if (~ok).any()
                     else pl.Series("rm_flip", flip))
    fold_col = np.full(n, -1, dtype=np.int64)
    fold_col[idx] = folds
    cue_cols = {f"cue_{name}": full(cue_diff[:, j]) for j, name in enumerate(CUE_FUNCS)}
    audit_df = audit_df.with_columns(
        pl.Series("is_shortcut", is_short).fill_null(False), pl.Series("fold", fold_col), *extra,
        *[pl.Series(k, v).fill_nan(None) for k, v in cue_cols.items()])
    drop = [c for c in audit_df.columns if c in table.columns]   # re-scoring an audited table
    audited = pl.concat([table.drop(drop), audit_df], how="horizontal")
    with atomic_path(cfg.out / AUDITED_FILE) as tmp:
        audited.write_parquet(tmp, compression="zstd", statistics=False)
    t = lap("write", t)

    # ---- summary -------------------------------------------------------------------------------
    truth = sub["cue_on_chosen"].to_numpy() if "cue_on_chosen" in sub.columns else None
    cue_share = None
    if truth is not None and sub["cue_on_chosen"].null_count() < m:
        known = ~sub["cue_on_chosen"].is_null().to_numpy()
        flag = np.asarray(truth[known], dtype=bool)
        cue_share = {s: round(float((w[known] * flag).sum() / w[known].sum()), 4) for s, w in all_weights.items()}
        cue_share["untouched"] = round(float(flag.mean()), 4)
    per_source = []
    for src in sorted(set(sub["source"].to_list())):
        sel = (sub["source"] == src).to_numpy()
        per_source.append({"source": src, "n": int(sel.sum()), "text_acc": metrics.accuracy(text_margin[sel]),
                           "mm_acc": metrics.accuracy(mm_margin[sel]), "cue_acc": metrics.accuracy(cue_margin[sel]),
                           "shortcut_rate": float((text_prob[sel] >= cfg.threshold).mean())})
    status_counts = dict(table.group_by("status").len().sort("status").iter_rows())
    summary = {
        "n_rows": n, "n_scored": m, "status_counts": status_counts,
        "text_acc": metrics.accuracy(text_margin), "mm_acc": metrics.accuracy(mm_margin),
        "cue_acc": metrics.accuracy(cue_margin), "shortcut_rate": float((text_prob >= cfg.threshold).mean()),
        "sfd": metrics.sfd(text_margin, mm_margin), "sfc_mean": float(sfc.mean()),
        "scheme": cfg.scheme, "threshold": cfg.threshold,
        "weights": {"min": float(weight.min()), "max": float(weight.max()),
                    "quantiles": {q: float(np.quantile(weight, float(q))) for q in ("0.05", "0.25", "0.5", "0.75", "0.95")}},
        "cues": cues, "top_cue": cues[0]["name"], "cue_share": cue_share, "per_source": per_source,
        "folds": {"k": cfg.folds, "n_groups": int(groups.max() + 1), "largest_group": int(np.bincount(groups).max()),
                  "sizes": np.bincount(folds, minlength=cfg.folds).tolist()},
        "l2": {"text": text_l2, "cue": cue_l2, "mm": mm_l2},
        "temperature": {"text": text_temp, "cue": cue_temp, "mm": mm_temp},
        "encoders": {"text": text_info, **image_info},
        "rm": None if rm_info is None else {**rm_info, **rm_summary(rm_cols["rm_margin"], rm_cols["rm_blank_margin"],
                                                                      text_margin)},
        "pairs_dir": str(pairs_dir), "world_size": world, "config": to_dict(cfg), "versions": versions(), "seeds": {"seed": cfg.seed},
        "timings": {**timings, "total": round(time.perf_counter() - t_start, 3)},
        "peak_rss_mib": peak_rss,   # the process's peak resident memory at the end of each stage
    }
    write_json_atomic(cfg.out / "config.json", to_dict(cfg))
    write_json_atomic(cfg.out / SUMMARY_FILE, summary)
    return summary
