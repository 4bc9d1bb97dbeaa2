"""`eval --best-of-n`: how well each reward model (a `train` run, a VLM reward model, or scores
precomputed by any external one) picks among a user's own candidate responses.

Per scorer and per n, over random n-subsets of each group's M candidates, exactly (no sampling):
the expected gold of the pick (`selected`), the random and perfect pickers, `regret`, `gap_closed`,
`win_best` and `win_random`, with grouped bootstrap intervals (groups sharing a picture or a prompt
resample together) and paired differences to the first scorer. With or without gold: how the pick's
style drifts from the pool as n grows (the cue features), and with `--blank` how often the pick stays
the same when the picture is replaced by a blank one."""

from __future__ import annotations

import hashlib
import io
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from audit.bon.candidates import Candidates, Group, read_candidates
from audit.bon.estimators import agreement, gap_closed, grouped_mean_ci, kl_bon, pool_curve, subset_pick
from audit.config import EvalConfig
from audit.errors import FormatError

log = logging.getLogger(__name__)


@dataclass
class Scorer:
    name: str
    kind: str                           # "run" or "scores"
    source: str
    scores: list                        # per group: (M,) rewards
    blank: list | None = None           # per group: rewards with the blank picture (`--blank`)


def eval_best_of_n(cfg: EvalConfig) -> dict:
    """Read the candidates, score them with every run (and read every score column), report per n."""
    from audit.io import write_bytes_atomic, write_json_atomic

    cols = cfg.score_columns()
    with tempfile.TemporaryDirectory(prefix="shortcut-audit-bon-") as tmp:
        cands = read_candidates(cfg.best_of_n, Path(tmp), cfg.gold, cols, need_images=bool(cfg.data),
                                image_root=cfg.image_root)
        if not cands.groups:
            counts = _status_counts(cands)
            raise FormatError(f"`{cfg.best_of_n}` has no usable group of candidates ("
                              + ", ".join(f"{k}={v}" for k, v in counts.items()) + "); the first problem: "
                              + next(f"row {s['row']}: {s['detail']}" for s in cands.statuses if s["status"] != "ok"))
        scorers = _run_scorers(cfg, cands) + [Scorer(c, "scores", c, [g.scores[c] for g in cands.groups]) for c in cols]
        result = report(cfg, cands, scorers)
        if cfg.export_picks is not None:
            result["picks"] = export_picks(cfg, cands, scorers)
    if cfg.out is not None:
        write_json_atomic(cfg.out, result)
        write_bytes_atomic(cfg.out.with_suffix(".md"), result["table"].encode("utf-8"))
    return result


def _unique_names(paths: list[Path]) -> list[str]:
    names: list[str] = []
    for p in paths:
        base = Path(p).name or str(p)
        names.append(base if base not in names else f"{base}#{len(names) + 1}")
    return names


def _run_scorers(cfg: EvalConfig, cands: Candidates) -> list[Scorer]:
    from audit.bon.score import small_model_of
    from audit.probes.reward_model import load_reward_model

    out = []
    for name, run in zip(_unique_names(cfg.data), cfg.data):
        rm = load_reward_model(str(run), device=_device(cfg.device))
        model = small_model_of(rm)
        if model is not None:
            scores, blank = _small_scores(model, cands.groups, cfg.blank)
        else:
            scores, blank = _vlm_scores(rm, cands.groups, cfg.blank)
        out.append(Scorer(name, "run", str(run), scores, blank))
        log.info("scored %d groups with %s", len(cands.groups), run)
    return out


def _device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _split(values: np.ndarray, groups: list[Group]) -> list[np.ndarray]:
    ends = np.cumsum([len(g.responses) for g in groups])
    return np.split(values, ends[:-1])


def _small_scores(model, groups: list[Group], blank: bool) -> tuple[list, list | None]:
    """The small model's rewards: each distinct picture encoded once."""
    import torch

    from audit.bon.score import image_array, small_rewards, token_ids

    size, vocab = model.config["image_size"], model.config["vocab"]
    pictures: dict[str, np.ndarray] = {}
    for g in groups:
        if g.image_id not in pictures:
            pictures[g.image_id] = image_array(Path(g.image).read_bytes(), size)
    images = torch.from_numpy(np.stack([pictures[g.image_id] for g in groups]))
    owner = np.repeat(np.arange(len(groups)), [len(g.responses) for g in groups])
    responses = token_ids([r for g in groups for r in g.responses], vocab)
    args = (images, token_ids([g.prompt for g in groups], vocab), responses, owner)
    scores = _split(small_rewards(model, *args), groups)
    return scores, (_split(small_rewards(model, *args, blank=True), groups) if blank else None)


def _vlm_scores(rm, groups: list[Group], blank: bool, token_budget: int = 65536) -> tuple[list, list | None]:
    """A VLM reward model's rewards through the scorer `score --rm` uses (token-budget batches)."""
    from PIL import Image

    from audit.probes.reward_model import BLANK, Item, blank_size, item_image, score_items
    from audit.vlm import open_image

    sizes = {str(g.image): Image.open(g.image).size for g in groups}

    def run(ref_of) -> list:
        items = [Item(g.prompt, r, *ref_of(g)) for g in groups for r in g.responses]
        lengths = [rm.n_tokens(it.prompt, it.response, blank_size(it.image) or sizes[it.image]) for it in items]
        load = lambda ref: item_image(ref, lambda p: open_image(Path(p).read_bytes()))   # noqa: E731
        return _split(score_items(rm, items, lengths, load, token_budget).astype(np.float64), groups)

    return run(lambda g: (str(g.image), g.image_id)), (run(lambda g: (BLANK, "")) if blank else None)


def _status_counts(cands: Candidates) -> dict[str, int]:
    counts: dict[str, int] = {}
    for s in cands.statuses:
        counts[s["status"]] = counts.get(s["status"], 0) + 1
    return counts


def _summary(values: np.ndarray, clusters: list) -> dict:
    """Mean over groups per n and its grouped bootstrap 95% interval."""
    ci = grouped_mean_ci(values, np.asarray(clusters))
    return {"mean": np.nanmean(values, axis=0).tolist(),
            "ci": None if ci is None else [[float(lo), float(hi)] for lo, hi in zip(*ci)]}


def _per_group(scorer: Scorer, groups: list[Group], ns: list[int], cues: list[np.ndarray]) -> dict[str, np.ndarray]:
    """(G, len(ns)) matrices of every per-group number of one scorer, and (G, len(ns), C) style drift."""
    rows: dict[str, list] = {}
    for k, g in enumerate(groups):
        c = pool_curve(scorer.scores[k], g.gold, ns)
        vals = {key: v for key, v in c.items() if key != "pick"}
        vals["drift"] = c["pick"] @ cues[k] - cues[k].mean(axis=0)        # pick minus pool, per cue
        if scorer.blank is not None:
            vals["blind_agreement"] = np.array([agreement(scorer.scores[k], scorer.blank[k], n) for n in ns])
            if g.gold is not None:
                vals["blind_selected"] = np.array([subset_pick(scorer.blank[k], n) @ g.gold for n in ns])
        for key, v in vals.items():
            rows.setdefault(key, []).append(v)
    return {key: np.stack(v) for key, v in rows.items()}


def report(cfg: EvalConfig, cands: Candidates, scorers: list[Scorer]) -> dict:
    """The results dict (JSON-ready) with its Markdown table under `table`."""
    from audit.bon.report import eval_markdown
    from audit.probes.cues import CUE_FUNCS, cue_values

    groups, ns = cands.groups, cfg.ns_list()
    clusters = [g.image_id or g.prompt for g in groups]      # a picture's groups resample together
    cues = [cue_values(g.responses, [g.prompt] * len(g.responses)) for g in groups]
    m = np.array([len(g.responses) for g in groups])
    per = {s.name: _per_group(s, groups, ns, cues) for s in scorers}
    out = {"best_of_n": {"candidates": str(cfg.best_of_n), "layout": cands.layout, "rows_in": len(cands.statuses),
                         "rows_out": len(cands.statuses), "status_counts": _status_counts(cands),
                         "not_ok": [s for s in cands.statuses if s["status"] != "ok"], "groups": len(groups),
                         "candidates_per_group": {"min": int(m.min()), "median": float(np.median(m)),
                                                  "max": int(m.max())},
                         "gold": cands.gold, "n": ns, "kl_bon_upper_bound": kl_bon(ns).tolist(),
                         "short_groups": [int((m < n).sum()) for n in ns], "baseline": scorers[0].name},
           "scorers": {}, "paired": {}}
    for s in scorers:
        p = per[s.name]
        e = {"kind": s.kind, "source": s.source,
             "style": {"pool": dict(zip(CUE_FUNCS, np.mean([c.mean(axis=0) for c in cues], axis=0).tolist())),
                       "drift": {name: _summary(p["drift"][:, :, j], clusters) for j, name in enumerate(CUE_FUNCS)}}}
        for key in ("selected", "random", "oracle", "win_best", "win_random", "blind_agreement", "blind_selected"):
            if key in p:
                e[key] = _summary(p[key], clusters)
        if "selected" in p:
            e["regret"] = _summary(np.maximum(p["oracle"] - p["selected"], 0.0), clusters)   # >= 0; no rounding noise
            e["gap_closed"] = gap_closed(*(np.nanmean(p[k], axis=0) for k in ("selected", "random", "oracle"))).tolist()
        out["scorers"][s.name] = e
    base = per[scorers[0].name]
    if "selected" in base:
        for s in scorers[1:]:
            out["paired"][s.name] = {"selected_diff": _summary(per[s.name]["selected"] - base["selected"], clusters)}
    out["table"] = eval_markdown(out)
    return out


def _image_file(g: Group, folder: Path) -> str | None:
    """The picture of a pick for an outside judge: its path as the candidates file gives it, or, when
    the file embeds it, a copy written under the picks folder."""
    from PIL import Image

    from audit.io import write_bytes_atomic
    from audit.sources.writers import inside, safe_file_name

    if g.image_ref != "embedded":
        return g.image_ref
    data = Path(g.image).read_bytes() if isinstance(g.image, Path) else g.image.data
    fmt = (Image.open(io.BytesIO(data)).format or "img").lower()
    rel = f"images/{safe_file_name(hashlib.sha256(data).hexdigest()[:32] + '.' + fmt)}"
    target = inside(folder / rel, folder)
    if not target.exists():
        write_bytes_atomic(target, data)
    return rel


def export_picks(cfg: EvalConfig, cands: Candidates, scorers: list[Scorer]) -> dict[str, str]:
    """Each scorer's pick among all of a group's candidates (n = M; a tie goes to the first), one JSONL
    file per scorer, for an outside judge."""
    import json

    from audit.io import atomic_path, claim_output
    from audit.sources.writers import inside, safe_file_name

    folder = Path(cfg.export_picks)
    files = {}
    with claim_output(folder, "eval-picks", [cfg.best_of_n, *cfg.data], replace_own=True):
        for s in scorers:
            target = inside(folder / safe_file_name(f"{s.name}.jsonl"), folder)
            with atomic_path(target) as tmp, open(tmp, "w", encoding="utf-8") as fh:
                for g, sc in zip(cands.groups, s.scores):
                    k = int(np.argmax(sc))
                    row = {"group_id": g.group_id, "prompt": g.prompt, "image": _image_file(g, folder), "index": k,
                           "response": g.responses[k], "score": float(sc[k]), "scorer": s.name}
                    if isinstance(g.image, Path) and g.image_ref != "embedded":
                        row["image_file"] = str(g.image)       # where the path resolved (inside the image root)
                    if g.gold is not None:
                        row["gold"] = float(g.gold[k])
                    fh.write(json.dumps(row, ensure_ascii=False) + "\n")
            files[s.name] = str(target)
    return files
