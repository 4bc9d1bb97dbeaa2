"""`score`: the audited table. Fits the probes out of fold, then writes SFC, weights, shortcut flags
and one column per cue beside every pair, plus summary.json.

The flow, one stage each (each stage owns what it computes; the probes are `audit.probes`):

    open the pairs (groups, folds)           audit.context.open_pairs
    encode what the probes need (cached)     audit.inputs.InputStore   (data-parallel, resumable)
    fit each probe out of fold               Probe.fit: cue -> text -> mm (mm sees the text margin)
    calibrate, SFC and weights               Audited.of (temperature scaling, cross-fitted; schemes)
    write the table and the summary          write_audited, summarise   (atomically)

Memory: the table's texts are never all in memory. Ids become integer codes, texts and image paths
are read in fixed windows (`audit.stream`) for their content keys, cue features and encoding, the
heads gather embeddings chunk by chunk from the memory-mapped cache, and the audited table is written
batch by batch beside the original rows. What stays per pair is numbers: about 0.4 KiB (margins,
cue features, cache positions, the multimodal probe's two 32-wide projections).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from audit import metrics
from audit.bt import calibrate
from audit.config import ScoreConfig, to_dict
from audit.context import ScoreContext, open_pairs, pairs_dir_for
from audit.io import atomic_path, versions, write_json_atomic
from audit.probes import ProbeResult, select
from audit.probes.cues import CUE_FUNCS
from audit.schemes import TEXT_ONLY, schemes_for, weights
from audit.stream import read_batches

log = logging.getLogger(__name__)

AUDITED_FILE = "audited.parquet"
TABLE_METADATA_KEY = b"shortcut_audit"   # the audited table's own record of how it was made
SUMMARY_FILE = "summary.json"
AUDIT_COLUMNS = ("text_margin", "text_prob", "text_loss", "mm_margin", "mm_prob", "mm_loss", "sfc", "weight",
                 "is_shortcut", "fold", "cue_margin")


def current_rss_mib() -> float | None:
    """This process's resident memory now (MiB), from /proc (Linux); None where there is none."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


class StageClock:
    """Seconds and memory at the end of each stage, for the summary."""

    def __init__(self) -> None:
        self.start = self.t = time.perf_counter()
        self.timings: dict[str, float] = {}
        self.peak_rss: dict[str, float] = {}
        self.rss: dict[str, float | None] = {}

    def lap(self, name: str) -> None:
        import resource

        now = time.perf_counter()
        self.timings[name] = round(now - self.t, 3)
        self.peak_rss[name] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)   # MiB so far
        self.rss[name] = current_rss_mib()
        self.t = now


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


def write_audited(pairs_file: Path, spec: list, idx: np.ndarray, out: Path, metadata: dict | None = None,
                  restatus=None) -> None:
    """The pairs table with the audit columns beside it, streamed batch by batch (atomically): the
    table's texts are never all in memory, nor a second copy of the audit columns. `spec`: (name,
    values over the scored rows `idx`, value of the other rows or None for null); NaN becomes null.
    Audit columns already in the table (re-scoring an audited table) are replaced. `metadata` goes
    into the file's schema metadata as JSON under `shortcut_audit` (see `table_metadata`). `restatus(batch,
    start)` sets the statuses `score` found (`ScoreContext.with_status`)."""
    import pyarrow.parquet as pq

    names = [name for name, _, _ in spec]
    start, writer = 0, None
    with atomic_path(out) as tmp:
        try:
            for part in read_batches(pairs_file):
                part = part.drop_columns([c for c in names if c in part.column_names])
                part = part if restatus is None else restatus(part, start)
                for name, arr in _audit_columns(spec, idx, start, start + part.num_rows):
                    part = part.append_column(name, arr)
                if writer is None:
                    schema = part.schema
                    if metadata is not None:
                        schema = schema.with_metadata({**(schema.metadata or {}), TABLE_METADATA_KEY:
                                                       json.dumps(metadata, sort_keys=True, default=str).encode()})
                    writer = pq.ParquetWriter(tmp, schema, compression="zstd")
                writer.write_table(part)
                start += part.num_rows
        finally:
            if writer is not None:
                writer.close()


def read_table_metadata(path: Path) -> dict | None:
    """How an audited table was made (`table_metadata`), read from the file alone; None for a table
    written before the record existed, or by something else."""
    import pyarrow.parquet as pq

    raw = (pq.read_schema(path).metadata or {}).get(TABLE_METADATA_KEY)
    return None if raw is None else json.loads(raw)


def score(cfg: ScoreConfig) -> dict:
    """Run the audit; returns the summary (also written to AUDIT_DIR/summary.json).

    Under `torchrun` / `accelerate launch` every rank encodes its share of the texts, images and
    reward-model inputs into the shared cache, and rank 0 then fits the probes and writes the outputs
    (the other ranks return {"rank": r}). Rank 0 owns AUDIT_DIR while it runs (`claim_output`), so a
    second `score` into the same folder stops with an error instead of mixing two runs' files."""
    from audit.dist import launched_world
    from audit.io import check_output, claim_output

    if launched_world() > 1 and int(os.environ.get("RANK", "0")) != 0:
        check_output(cfg.out, [cfg.source], "score", holds=False)   # AUDIT/pairs as the source of AUDIT is fine
        return _score(cfg)          # waits in the process group's start until rank 0 holds the folder
    from audit.context import ingest_config, is_pairs_folder
    from audit.ingest import check_source, source_reads
    from audit.io import missing_folders, removed_on_failure
    from audit.schema import APP_EXPORTS, APP_SELECTIONS
    from audit.tags import TAGS_FILE

    raw = ingest_config(cfg)
    if not is_pairs_folder(cfg.source):
        check_source(raw)            # columns to map, a format to name: said before AUDIT_DIR is made
    created = missing_folders(cfg.out)
    with claim_output(cfg.out, "score", [cfg.source], overwrite=cfg.overwrite, resumable=True, holds=False,
                      keep=(TAGS_FILE, APP_EXPORTS, APP_SELECTIONS), reads=source_reads(cfg.source, cfg.image_root)), \
            removed_on_failure(created):         # a new AUDIT_DIR that bad input stops is removed again
        return _score(cfg)


def _score(cfg: ScoreConfig) -> dict:
    from audit.dist import barrier, launched_world, local_device, setup
    from audit.encoders.text import resolve_device
    from audit.inputs import InputStore

    rank, world = setup("gloo") if launched_world() > 1 else (0, 1)
    clock = StageClock()
    pairs_dir = pairs_dir_for(cfg, rank)
    clock.lap("ingest")
    ctx = open_pairs(cfg, pairs_dir, local_device(resolve_device(cfg.device)))
    clock.lap("folds")

    probes = select(cfg, ctx)
    store = InputStore(ctx, set().union(*(p.needs for p in probes.values())))
    if world > 1:                 # every rank encodes and prepares its share; rank 0 goes on alone
        store.fill((rank, world))
        for p in probes.values():
            p.prepare(ctx, (rank, world))
        barrier()
        if rank != 0:
            return {"rank": rank, "world_size": world}
    store.fill((0, 1))            # rank 0 (or a single process): everything is cached now
    for p in probes.values():
        p.prepare(ctx, (0, 1))
    ctx.inputs = store.located()
    clock.lap("encode")

    fitted: dict[str, ProbeResult] = {}
    for role, p in probes.items():   # cue, text, mm (the mm probe's offset is the text margin), then auxiliaries
        fitted[role] = p.fit(ctx, fitted)
        clock.lap(f"{role.replace('-', '_')}_probe")

    audit = Audited.of(cfg, ctx, fitted)
    write_audited(ctx.pairs_file, audit.spec(cfg, ctx, fitted), ctx.idx, cfg.out / AUDITED_FILE,
                  metadata=table_metadata(cfg, probes, fitted, audit), restatus=ctx.with_status)
    clock.lap("write")
    summary = summarise(cfg, ctx, probes, fitted, audit, clock, world)
    write_json_atomic(cfg.out / "config.json", to_dict(cfg))
    write_json_atomic(cfg.out / SUMMARY_FILE, summary)
    return summary


@dataclass
class Audited:
    """The calibrated margins of every role, their probabilities and losses, SFC and every scheme's
    weights over the scored rows."""

    margins: dict[str, np.ndarray]
    temperatures: dict[str, float | None]
    text_prob: np.ndarray
    text_loss: np.ndarray
    mm_prob: np.ndarray
    mm_loss: np.ndarray
    sfc: np.ndarray
    sfc_kind: str
    all_weights: dict[str, np.ndarray]
    weight: np.ndarray

    @classmethod
    def of(cls, cfg: ScoreConfig, ctx: ScoreContext, fitted: dict[str, ProbeResult]) -> "Audited":
        margins, temps = {}, {}
        for role in ("text", "mm", "cue"):      # temperature scaling (cross-fitted; the text role's on its nested margins)
            r = fitted[role]
            margins[role], temps[role] = calibrate(r.margin, ctx.folds, r.nested) if r.calibrate else (r.margin, None)
        text_loss, mm_loss = metrics.bt_loss(margins["text"]), metrics.bt_loss(margins["mm"])
        text_prob = metrics.sigmoid(margins["text"])
        sfc_kind = TEXT_ONLY if cfg.text_only else "paper" if (cfg.rm or cfg.mm_scores) else "residual"
        sfc = np.full(ctx.m, np.nan) if cfg.text_only else metrics.sfc(text_loss, mm_loss)
        kw = dict(text_prob=text_prob, sfc=sfc, clip=cfg.clip, ipw_floor=cfg.ipw_floor, jtt_factor=cfg.jtt_factor)
        ones = np.ones(ctx.m, dtype=bool)
        all_weights = {s: weights(s, ones, **kw) for s in schemes_for(sfc_kind)}
        return cls(margins, temps, text_prob, text_loss, metrics.sigmoid(margins["mm"]), mm_loss, sfc, sfc_kind,
                   all_weights, all_weights[cfg.scheme])

    def spec(self, cfg: ScoreConfig, ctx: ScoreContext, fitted: dict[str, ProbeResult]) -> list:
        """The audited columns: (name, values over the scored rows, value of the other rows: None = null).
        The core columns first, then each probe's own (e.g. `rm_margin`), then one per cue."""
        mg = self.margins
        core = [("text_margin", mg["text"], None), ("text_prob", self.text_prob, None),
                ("text_loss", self.text_loss, None), ("mm_margin", mg["mm"], None), ("mm_prob", self.mm_prob, None),
                ("mm_loss", self.mm_loss, None), ("sfc", self.sfc, None), ("weight", self.weight, 0.0),
                ("cue_margin", mg["cue"], None), ("is_shortcut", self.text_prob >= cfg.threshold, False),
                ("fold", ctx.folds.astype(np.int64), -1)]
        own = [c for r in fitted.values() for c in r.columns]
        return core + own + [(f"cue_{name}", ctx.cue_diff[:, j], None) for j, name in enumerate(CUE_FUNCS)]


def _cue_share(ctx: ScoreContext, all_weights: dict[str, np.ndarray]) -> dict | None:
    """Synthetic data only: the weighted share of pairs whose planted cue sits on the chosen side."""
    if "cue_on_chosen" not in ctx.sub.columns or ctx.sub["cue_on_chosen"].null_count() == ctx.m:
        return None
    known = ~ctx.sub["cue_on_chosen"].is_null().to_numpy()
    flag = np.asarray(ctx.sub["cue_on_chosen"].to_numpy()[known], dtype=bool)
    share = {s: round(float((w[known] * flag).sum() / w[known].sum()), 4) for s, w in all_weights.items()}
    share["untouched"] = round(float(flag.mean()), 4)
    return share


def _per_source(cfg: ScoreConfig, ctx: ScoreContext, audit: Audited) -> list[dict]:
    out = []
    mg = audit.margins
    for src in sorted(ctx.sub["source"].drop_nulls().unique().to_list()):
        sel = (ctx.sub["source"] == src).to_numpy()
        out.append({"source": src, "n": int(sel.sum()), "text_acc": metrics.accuracy(mg["text"][sel]),
                    "mm_acc": None if audit.sfc_kind == TEXT_ONLY else metrics.accuracy(mg["mm"][sel]), "cue_acc": metrics.accuracy(mg["cue"][sel]),
                    "shortcut_rate": float((audit.text_prob[sel] >= cfg.threshold).mean())})
    return out


LARGE_GROUP_SHARE = 0.05   # one group above this share of the scored pairs unbalances the folds


def audit_warnings(summary: dict) -> list[str]:
    """What a reader must know before trusting the SFC and weights: one group holding a large share of
    the data (folds unbalanced, its pairs scored by heads that saw few like them), and a weak
    multimodal side (its loss is then close to log 2 on most pairs, so SFC ~ L_text / (L_text + 0.69)
    and follows the text probe)."""
    return _group_warnings(summary) + _mm_warnings(summary)


def _group_warnings(summary: dict) -> list[str]:
    from audit.context import KEY_WORDS

    big = ((summary.get("folds") or {}).get("links") or {}).get("largest_group")
    if not big or big["share"] <= LARGE_GROUP_SHARE:
        return []
    ex = big.get("example") or {}
    what = {"prompt": f" (\"{str(ex.get('prompt', ''))[:80]}\")",
            "answers": f" (\"{str(ex.get('chosen', ''))[:50]}\" / \"{str(ex.get('rejected', ''))[:50]}\")"}.get(big["key"], "")
    return [f"one group holds {100 * big['share']:.1f}% of the scored pairs ({big['rows']} rows): they stay in one "
            f"fold, so the folds are unbalanced. Most of it is linked by its {KEY_WORDS[big['key']]}{what}, shared by "
            f"{big['key_rows']} of its rows, e.g. row `{ex.get('sample_id', '?')}`. Look at those rows: copies of one "
            "pair are worth dropping; a shared text that is a template of your data leaks nothing, and the imbalance "
            "only makes the scores noisier"]


def _mm_warnings(summary: dict) -> list[str]:
    from audit.reading import mm_weakness

    why = mm_weakness(summary)
    if why is None:
        return []
    if summary["sfc_kind"] == "residual":
        return [f"{why}. For image-grounded SFC, audit with your own multimodal reward model (`--rm`), its "
                "scores (`--mm-scores`), or a real image encoder (`--image-encoder`, e.g. a CLIP or SigLIP folder)"]
    return [f"{why}. The multimodal model given (`--rm` / `--mm-scores`) barely uses the image on this data; "
            "check it on pairs whose answer needs the picture"]


def _acc_ci(cfg: ScoreConfig, ctx: ScoreContext, margin: np.ndarray) -> list[float] | None:
    """95% interval of an out-of-fold accuracy, bootstrapping the cross-fitting groups."""
    ci = metrics.grouped_accuracy_ci(margin, ctx.groups, seed=cfg.seed)
    return None if ci is None else [round(ci[0], 5), round(ci[1], 5)]


def _mm_minus_text(cfg: ScoreConfig, ctx: ScoreContext, audit: "Audited") -> dict:
    """Multimodal minus text-only accuracy on the same pairs, with its paired 95% interval (the same
    groups, rounds and seed as `_acc_ci`): is the image side better than the text side beyond noise?"""
    if audit.sfc_kind == TEXT_ONLY:
        return {"mm_minus_text": None, "mm_minus_text_ci": None}
    mm, text = audit.margins["mm"], audit.margins["text"]
    ci = metrics.grouped_accuracy_diff_ci(mm, text, ctx.groups, seed=cfg.seed)
    return {"mm_minus_text": metrics.accuracy(mm) - metrics.accuracy(text),
            "mm_minus_text_ci": None if ci is None else [round(ci[0], 5), round(ci[1], 5)]}


def encoders(fitted: dict[str, ProbeResult]) -> dict:
    """What each probe ran on (text encoder, image side, auxiliary probes): `summary.json` `encoders`."""
    return {"text": fitted["text"].encoder, **fitted["mm"].encoder,
            **{name: r.encoder for name, r in fitted.items() if name not in ("cue", "text", "mm")}}


# Settings that name where the data came from rather than how its numbers were made.
_WHERE = ("source", "format", "image_root", "columns")


def table_metadata(cfg: ScoreConfig, probes: dict, fitted: dict[str, ProbeResult], audit: "Audited") -> dict:
    """What the audited table's numbers depend on, stored in its own Parquet metadata (key
    `shortcut_audit`): a copy of the file without its summary.json still says which probes, encoders
    and scheme made its SFC and weights (values made with other probes or image ablations are not
    comparable). Deterministic: the same run writes the same bytes."""
    from audit import __version__
    from audit.config import settings_used

    return {"shortcut_audit": __version__, "sfc_kind": audit.sfc_kind,
            "probes": {role: p.name for role, p in probes.items()}, "encoders": encoders(fitted),
            "temperature": {role: audit.temperatures[role] for role in ("text", "cue", "mm")},
            "settings": {k: v for k, v in settings_used(to_dict(cfg)).items() if k not in _WHERE}}


def summarise(cfg: ScoreConfig, ctx: ScoreContext, probes: dict, fitted: dict[str, ProbeResult], audit: Audited,
              clock: StageClock, world: int) -> dict:
    """summary.json: the headline numbers, then what each probe owns (its summary keys, its encoder
    entry, its ridge strength and temperature), then how the run went."""
    mg, w = audit.margins, audit.weight
    text_only = audit.sfc_kind == TEXT_ONLY
    summary = {
        "n_rows": ctx.n, "n_scored": ctx.m, "status_counts": ctx.status_counts, "text_only": text_only,
        "scored_without_image": int(ctx.m - ctx.status_counts.get("ok", 0)) if text_only else 0,
        "text_acc": metrics.accuracy(mg["text"]), "text_acc_ci": _acc_ci(cfg, ctx, mg["text"]),
        "text_signal_share": metrics.text_signal_share(metrics.accuracy(mg["text"])),
        "mm_acc": None if text_only else metrics.accuracy(mg["mm"]), **_mm_minus_text(cfg, ctx, audit),
        "cue_acc": metrics.accuracy(mg["cue"]), "shortcut_rate": float((audit.text_prob >= cfg.threshold).mean()),
        "sfd": None if text_only else metrics.sfd(mg["text"], mg["mm"]),
        "sfc_mean": None if text_only else float(audit.sfc.mean()), "sfc_kind": audit.sfc_kind,
        "scheme": cfg.scheme, "threshold": cfg.threshold,
        "weights": {"min": float(w.min()), "max": float(w.max()),
                    "quantiles": {q: float(np.quantile(w, float(q))) for q in ("0.05", "0.25", "0.5", "0.75", "0.95")}},
        "cue_share": _cue_share(ctx, audit.all_weights), "per_source": _per_source(cfg, ctx, audit),
        "folds": {"k": cfg.folds, "n_groups": int(ctx.groups.max() + 1),
                  "largest_group": int(np.bincount(ctx.groups).max()),
                  "sizes": np.bincount(ctx.folds, minlength=cfg.folds).tolist(), "links": ctx.links},
        "l2": {role: fitted[role].l2 for role in ("text", "cue", "mm")},
        "temperature": {role: audit.temperatures[role] for role in ("text", "cue", "mm")},
        "encoders": encoders(fitted),
        "rm": None, "phrases": [], "function_words": [], "slice_phrases": [], "slices": None, "prompt_blind_acc": None,
        "lexical_acc": None, "text_components": [],
    }
    for role, p in probes.items():
        summary.update(p.summary(fitted[role], mg))
    summary["warnings"] = audit_warnings(summary)
    summary.update({
        "probes": {role: p.name for role, p in probes.items()},
        "pairs_dir": str(Path(ctx.pairs_dir).resolve()), "world_size": world, "config": to_dict(cfg),
        "versions": versions(), "seeds": {"seed": cfg.seed},
        "timings": {**clock.timings, "total": round(time.perf_counter() - clock.start, 3)},
        "peak_rss_mib": clock.peak_rss,   # the process's peak resident memory at the end of each stage
        "rss_mib": clock.rss,             # its resident memory at the end of each stage (Linux; null elsewhere)
    })
    return summary
