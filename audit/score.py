"""`score`: the audited table. Cross-fits the text-only shortcut models and the multimodal probe,
then writes SFC, weights, shortcut flags and one column per cue beside every pair, plus summary.json.

Flow: pairs table -> groups and folds -> cue features and cue probe -> text embeddings (cached) ->
text probe -> image features (cached) -> multimodal probe (or external scores) -> SFC, weights ->
audited.parquet + summary.json, written atomically. Unique texts and images are encoded once.

Memory: the table's texts are never all in memory. Ids become integer codes, texts and image paths
are read in fixed windows (`audit.stream`) for their content keys, cue features and encoding, the
heads gather embeddings chunk by chunk from the memory-mapped cache, and the audited table is written
batch by batch beside the original rows. What stays per pair is numbers: about 0.4 KiB (margins,
cue features, cache positions, the multimodal probe's two 32-wide projections).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np

from audit import metrics, schema
from audit.bt import LinearBT, calibrate, cross_fit
from audit.config import IngestConfig, ScoreConfig, to_dict
from audit.encoders.cache import KEY, EmbeddingCache, as_keys, content_key
from audit.errors import FormatError
from audit.folds import assign_folds, codes, group_ids
from audit.io import atomic_path, versions, write_json_atomic
from audit.probes.cues import CUE_FUNCS, cue_differences, fit_cue_probe
from audit.probes.reward_model import rm_summary
from audit.probes.text_embedding import text_feature_rows
from audit.schemes import schemes_for, weights
from audit.stream import PairRows, read_batches

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

        ingest(IngestConfig(source=src, out=out, format=cfg.format, image_root=cfg.image_root, overwrite=True))
    barrier()
    return out


def current_rss_mib() -> float | None:
    """This process's resident memory now (MiB), from /proc (Linux); None where there is none."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    import os

    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


def _columns(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    try:
        return pq.read_schema(path).names
    except (OSError, ValueError) as e:
        raise FormatError(f"cannot read `{path}` as Parquet ({e}); run `shortcut-audit ingest` first") from None


def first_seen(keys: np.ndarray) -> np.ndarray:
    """Per key: is this its first occurrence? (Each distinct item is encoded in exactly one window.)"""
    first = np.zeros(len(keys), dtype=bool)
    first[np.unique(keys, return_index=True)[1]] = True
    return first


def _flat_positions(name: str, pos: np.ndarray, m: int, per_row: int) -> np.ndarray:
    """Indices into a cache's flat key array for the rows `pos`, in the order its `items_of` lists them."""
    if name == "text":        # (3, m) ravelled: prompts, then chosen, then rejected
        return np.concatenate([j * m + pos for j in range(per_row)])
    return (pos[:, None] * per_row + np.arange(per_row)).ravel()   # (m, per_row) ravelled


def _audit_columns(spec: list, idx: np.ndarray, start: int, end: int) -> list:
    """The audit columns of table rows [start, end) as Arrow arrays (see `write_audited`)."""
    import pyarrow as pa

    lo, hi = np.searchsorted(idx, [start, end])
    at = idx[lo:hi] - start
    out = []
    for name, values, fill in spec:
        col = np.full(end - start, 0 if fill is None else fill, dtype=values.dtype)
        col[at] = values[lo:hi]
        null = np.full(end - start, fill is None)      # rows that are not scored: null unless filled
        null[at] = False
        if col.dtype.kind == "f":
            null |= np.isnan(col)
        out.append((name, pa.array(col, mask=null if null.any() else None)))
    return out


def write_audited(pairs_file: Path, spec: list, idx: np.ndarray, out: Path) -> None:
    """The pairs table with the audit columns beside it, streamed batch by batch (atomically): the
    table's texts are never all in memory, nor a second copy of the audit columns. `spec`: (name,
    values over the scored rows `idx`, value of the other rows or None for null); NaN becomes null.
    Audit columns already in the table (re-scoring an audited table) are replaced."""
    import pyarrow.parquet as pq

    names = [name for name, _, _ in spec]
    start, writer = 0, None
    with atomic_path(out) as tmp:
        try:
            for part in read_batches(pairs_file):
                part = part.drop_columns([c for c in names if c in part.column_names])
                for name, arr in _audit_columns(spec, idx, start, start + part.num_rows):
                    part = part.append_column(name, arr)
                if writer is None:
                    writer = pq.ParquetWriter(tmp, part.schema, compression="zstd")
                writer.write_table(part)
                start += part.num_rows
        finally:
            if writer is not None:
                writer.close()


def score(cfg: ScoreConfig) -> dict:
    """Run the audit; returns the summary (also written to AUDIT_DIR/summary.json).

    Under `torchrun` / `accelerate launch` every rank encodes its share of the texts, images and
    reward-model inputs into the shared cache, and rank 0 then fits the heads and writes the outputs
    (the other ranks return {"rank": r}). Rank 0 holds a lock on AUDIT_DIR while it runs, so a second
    `score` into the same folder stops with an error instead of mixing two runs' files."""
    from audit.dist import launched_world
    from audit.io import check_output, claim_output

    check_output(cfg.out, [cfg.source], "score", holds=False)   # AUDIT/pairs as the source of AUDIT is fine

    if launched_world() > 1 and int(os.environ.get("RANK", "0")) != 0:
        return _score(cfg)          # waits in the process group's start until rank 0 holds the folder
    with claim_output(cfg.out, "score", [cfg.source], overwrite=cfg.overwrite, resumable=True, holds=False):
        return _score(cfg)


def _score(cfg: ScoreConfig) -> dict:
    import polars as pl

    from audit.dist import barrier, launched_world, setup

    rank, world = setup("gloo") if launched_world() > 1 else (0, 1)
    shard = (rank, world)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    peak_rss: dict[str, float] = {}
    rss: dict[str, float | None] = {}

    def lap(name: str, t0: float) -> float:
        import resource

        now = time.perf_counter()
        timings[name] = round(now - t0, 3)
        peak_rss[name] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)   # MiB so far
        rss[name] = current_rss_mib()
        return now

    cfg.out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    pairs_dir = _pairs_dir(cfg, rank)
    t = lap("ingest", t)
    pairs_file = pairs_dir / schema.PAIRS_FILE
    names = _columns(pairs_file)
    missing = [c for c in schema.PAIRS_COLUMNS if c not in names]
    if missing:
        raise FormatError(f"`{pairs_file}` lacks column(s) {', '.join(missing)}: "
                          "it is not a pairs table; run `shortcut-audit ingest` first")
    # Only numbers per pair are held: the status column is read, then each id column in turn becomes
    # integer codes; texts and image paths are read window by window (`audit.stream`).
    status = pl.read_parquet(pairs_file, columns=["status"])["status"]
    n = len(status)
    ok = (status == schema.OK).to_numpy()
    status_counts = dict(status.value_counts().sort("status").iter_rows())
    del status
    idx = np.where(ok)[0]
    m = idx.size
    if m < 2 * cfg.folds:
        raise FormatError(f"only {m} scorable (`ok`) pairs in `{pairs_dir}`; cross-fitting with "
                          f"{cfg.folds} folds needs at least {2 * cfg.folds} (see the status column)")
    rows = PairRows(pairs_file, idx)

    def scored(name: str) -> pl.Series:
        return pl.read_parquet(pairs_file, columns=[name])[name].gather(idx)

    # Groups and folds: no pair is scored by a head that saw it or a sibling (same image/row/prompt).
    groups = group_ids(*(codes(scored(c)) for c in ("image_id", "sample_id", "prompt_id")))
    n_groups = int(groups.max()) + 1
    if n_groups < cfg.folds:
        raise FormatError(f"the {m} scorable pairs form only {n_groups} group(s) (pairs sharing an image, a source "
                          f"row or a specific prompt stay together); cross-fitting needs at least `--folds` "
                          f"{cfg.folds} groups: lower `--folds` or add data")
    folds = assign_folds(groups, cfg.folds, cfg.seed)
    sub = pl.DataFrame([scored("source").cast(pl.Categorical),
                        *[scored(c) for c in ("cue_on_chosen",) if c in names]])   # what the summary reads
    t = lap("folds", t)

    # ---- encoding: texts, images and reward-model inputs into the on-disk cache -----------------
    # Pass 1 reads the texts window by window for their content keys and cue features; the keys say
    # which window first holds each distinct text / image / RM input. Pass 2 (only where the cache
    # lacks something) encodes, per window, the items first seen there, in the cache's canonical
    # chunks. Data-parallel: each rank fills its share of the chunks; rank 0 then has them all.
    from audit.dist import local_device
    from audit.encoders.text import load_text_encoder, resolve_device

    device = local_device(resolve_device(cfg.device))
    cache_root = cfg.cache_dir or (cfg.out / "cache")
    use_probe = not (cfg.mm_scores or cfg.rm)
    need_text_emb = cfg.text_probe == "embedding" or use_probe
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

    # pass 1: keys (16 bytes each) and cue features
    text_keys = np.zeros((3, m), dtype=KEY)                 # prompt, chosen, rejected
    image_keys = np.zeros(m, dtype=KEY) if use_probe else None
    rm_keys = np.zeros((m, 4), dtype=KEY) if cfg.rm else None   # chosen, rejected, blank chosen, blank rejected
    cue_diff = np.zeros((m, len(CUE_FUNCS)), dtype=np.float64)
    pass1 = ["prompt", "chosen", "rejected", "image_id"] + (["image_path"] if cfg.rm else [])
    for pos, cols in rows.windows(pass1):
        p, c, r = cols["prompt"], cols["chosen"], cols["rejected"]
        for j, texts in enumerate((p, c, r)):
            text_keys[j, pos] = as_keys([content_key(x) for x in texts])
        cue_diff[pos] = cue_differences(p, c, r)
        if use_probe:
            image_keys[pos] = as_keys([bytes.fromhex(i) for i in cols["image_id"]])
        if cfg.rm:
            from audit.probes.reward_model import blank_refs, item_keys

            blanks = blank_refs(cols["image_path"], cfg.rm_blank, image_size)
            rm_keys[pos] = item_keys(p, c, r, cols["image_id"], blanks).reshape(-1, 4)

    log.info("pass 1 done (keys, cue features): RSS %s MiB", current_rss_mib())
    caches: dict[str, tuple] = {}    # name -> (cache, flat keys, encode, size, items of a window)
    if need_text_emb:
        enc = load_text_encoder(cfg.text_encoder, pooling=cfg.pooling, device=device, batch_size=cfg.batch_size,
                                max_length=cfg.max_length, trust_remote_code=cfg.trust_remote_code)
        caches["text"] = (EmbeddingCache(cache_root, enc.fingerprint), text_keys.ravel(), enc.encode, len,
                          lambda pos, cols: cols["prompt"] + cols["chosen"] + cols["rejected"])
    if use_probe:
        from audit.encoders.image import load_image_encoder

        ienc = load_image_encoder(cfg.image_encoder, device=device, trust_remote_code=cfg.trust_remote_code)
        caches["image"] = (EmbeddingCache(cache_root, ienc.fingerprint), image_keys,
                           lambda paths: ienc.encode([resolve(x).read_bytes() for x in paths]), lambda _: 0,
                           lambda pos, cols: cols["image_path"])
    if cfg.rm:
        from audit.probes.reward_model import RMEncoder, blank_refs, load_reward_model, window_items

        scorer = load_reward_model(cfg.rm, device=device, max_length=cfg.rm_max_length,
                                   trust_remote_code=cfg.trust_remote_code, compile=cfg.compile)
        rm_enc = RMEncoder(scorer, load_image, image_size, cfg.token_budget, cfg.workers)
        caches["rm"] = (EmbeddingCache(cache_root, scorer.fingerprint), rm_keys.ravel(), rm_enc.encode, rm_enc.size,
                        lambda pos, cols: window_items(cols, blank_refs(cols["image_path"], cfg.rm_blank, image_size)))

    def fill(part: tuple[int, int]) -> None:
        """Pass 2: encode what the caches lack (this rank's chunks of it)."""
        todo = {}
        for name, (cache, keys, encode, size, items_of) in caches.items():
            cache.refresh()
            if not cache.has(np.unique(keys)).all():
                per_row = len(keys) // m                # keys laid out key-major (text) or row-major (rm)
                todo[name] = (first_seen(keys), per_row)
        if not todo:
            return
        cols = {"text": ["prompt", "chosen", "rejected"], "image": ["image_path"],
                "rm": ["prompt", "chosen", "rejected", "image_path", "image_id"]}
        offset = dict.fromkeys(todo, 0)
        for pos, window in rows.windows(sorted({c for name in todo for c in cols[name]})):
            for name, (first, per_row) in todo.items():
                cache, keys, encode, size, items_of = caches[name]
                flat = _flat_positions(name, pos, m, per_row)
                sel = first[flat]
                if not sel.any():
                    continue
                items = items_of(pos, window)
                offset[name] += cache.fill([items[i] for i in np.flatnonzero(sel)], keys[flat[sel]], encode,
                                           chunk=cfg.chunk, size=size, shard=part, offset=offset[name])

    if world > 1:
        fill(shard)
        if cfg.text_probe == "finetune":
            from audit.probes.finetune import finetune_margins

            finetune_margins(cfg, rows, text_keys, folds, cache_root, device, shard=shard)
        barrier()
        if rank != 0:
            return {"rank": rank, "world_size": world}
    fill((0, 1))          # rank 0 (or a single process): everything is cached now
    log.info("pass 2 done (caches filled): RSS %s MiB", current_rss_mib())
    encoded: dict = {}
    if need_text_emb:
        from audit.probes.text_embedding import PairEmbeddings

        encoded["text"] = (enc, PairEmbeddings(caches["text"][0], *text_keys))
    if use_probe:
        icache = caches["image"][0]
        ipart, irow = icache.locate(image_keys)
        encoded["image"] = (ienc, lambda i: icache.gather(ipart[i], irow[i]))
    if cfg.rm:
        r = caches["rm"][0].get(rm_keys.ravel())[:, 0].astype(np.float64).reshape(m, 4)
        encoded["rm"] = (scorer, {"margin": r[:, 0] - r[:, 1], "blank_margin": r[:, 2] - r[:, 3],
                                  "stats": rm_enc.stats})
    if cfg.text_probe == "finetune":
        from audit.probes.finetune import finetune_margins

        encoded["finetune"] = finetune_margins(cfg, rows, text_keys, folds, cache_root, device)
    del text_keys, image_keys, rm_keys
    log.info("cache positions located: RSS %s MiB", current_rss_mib())
    t = lap("encode", t)

    # Cue probe: interpretable differences, cross-fitted BT logistic on standardised features.
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
                   "token_budget": cfg.token_budget, **res["stats"],
                   "compiled": scorer.compiled}
        image_info = {"mm": "reward model", "rm": cfg.rm}
    elif cfg.mm_scores:
        from audit.probes.external import external_margins

        wanted = {c.strip() for c in cfg.mm_scores.split(",")}
        mm_margin = external_margins({c: rows.column(c) if c in wanted else None for c in names}, cfg.mm_scores)
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
    sfc_kind = "paper" if (cfg.rm or cfg.mm_scores) else "residual"
    all_weights = {s: weights(s, ones, **scheme_kw) for s in schemes_for(sfc_kind)}
    weight = all_weights[cfg.scheme]

    # (name, values over the scored rows, value of the other rows: None = null); NaN is written as null.
    spec = [("text_margin", text_margin, None), ("text_prob", text_prob, None), ("text_loss", text_loss, None),
            ("mm_margin", mm_margin, None), ("mm_prob", mm_prob, None), ("mm_loss", mm_loss, None), ("sfc", sfc, None),
            ("weight", weight, 0.0), ("cue_margin", cue_margin, None),
            *[(k, v, None) for k, v in rm_cols.items()],
            ("is_shortcut", text_prob >= cfg.threshold, False), ("fold", folds.astype(np.int64), -1)]
    if rm_cols:   # the preferred response changes when the image is blanked (null where not scored)
        spec.append(("rm_flip", (rm_cols["rm_margin"] > 0) != (rm_cols["rm_blank_margin"] > 0), None))
    spec += [(f"cue_{name}", cue_diff[:, j], None) for j, name in enumerate(CUE_FUNCS)]
    write_audited(pairs_file, spec, idx, cfg.out / AUDITED_FILE)
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
    for src in sorted(sub["source"].drop_nulls().unique().to_list()):
        sel = (sub["source"] == src).to_numpy()
        per_source.append({"source": src, "n": int(sel.sum()), "text_acc": metrics.accuracy(text_margin[sel]),
                           "mm_acc": metrics.accuracy(mm_margin[sel]), "cue_acc": metrics.accuracy(cue_margin[sel]),
                           "shortcut_rate": float((text_prob[sel] >= cfg.threshold).mean())})
    summary = {
        "n_rows": n, "n_scored": m, "status_counts": status_counts,
        "text_acc": metrics.accuracy(text_margin), "mm_acc": metrics.accuracy(mm_margin),
        "cue_acc": metrics.accuracy(cue_margin), "shortcut_rate": float((text_prob >= cfg.threshold).mean()),
        "sfd": metrics.sfd(text_margin, mm_margin), "sfc_mean": float(sfc.mean()), "sfc_kind": sfc_kind,
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
        "pairs_dir": str(Path(pairs_dir).resolve()), "world_size": world, "config": to_dict(cfg), "versions": versions(), "seeds": {"seed": cfg.seed},
        "timings": {**timings, "total": round(time.perf_counter() - t_start, 3)},
        "peak_rss_mib": peak_rss,   # the process's peak resident memory at the end of each stage
        "rss_mib": rss,             # its resident memory at the end of each stage (Linux; null elsewhere)
    }
    write_json_atomic(cfg.out / "config.json", to_dict(cfg))
    write_json_atomic(cfg.out / SUMMARY_FILE, summary)
    return summary
