"""Read a Best-of-N candidates file (`eval --best-of-n`): groups of candidate responses to one prompt
and picture, with optional gold and optional scores of external reward models.

Layouts (JSONL, JSON, Parquet, Arrow or an HF `save_to_disk` folder, read like `ingest`):

- **wide**, one row per group: `prompt`; `image` / `image_path` / `img_path`; `responses` (a list);
  optional `group_id`; gold as `gold` (numbers, higher is better), `correct` (booleans) or `gold_best`
  (an index or a list of indices); score lists named by `--candidate-scores`. Adapters: RewardBench-2-like
  `chosen` / `rejected` lists (gold 1 / 0), Coste et al.'s `answers` / `gold_scores`, VLFeedback's
  `completions` (gold = the mean rating over its aspects, as `ingest` ranks them).
- **long**, one row per candidate: `response`, grouped by `group_id` (or `id`), else by prompt and
  picture; a scalar gold / correct column and scalar score columns (the paper's `sample_score.py`
  output `{prompt, img_path, response, score}` reads as it is, with `--candidate-scores score`).

Every input row gets a status (rows in = rows out): `ok`, or why its group cannot be used."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from audit import schema
from audit.errors import FormatError
from audit.sources.base import BadRecord, image_at

TOO_FEW = "too_few_candidates"
GOLD_LENGTH = "gold_length_mismatch"
SCORE_LENGTH = "score_length_mismatch"
BAD_GOLD = "bad_gold"
GOLD_MISSING = "gold_missing"
INCONSISTENT = "inconsistent_group"
PROMPT_KEYS = ("prompt", "question", "instruction", "query")
IMAGE_KEYS = ("image", "image_path", "img_path", "images")
ID_KEYS = ("group_id", "id", "sample_id")
GOLD_KEYS = ("gold", "gold_scores", "correct", "gold_best")
LONG_GOLD_KEYS = ("gold", "gold_score", "correct")      # one value per candidate row


@dataclass
class Group:
    """One prompt and picture with its candidate responses (only `ok` groups reach the estimators)."""

    group_id: str
    prompt: str
    image_ref: str | None            # the image as the file gives it (a path, or `embedded`)
    responses: list[str]
    gold: np.ndarray | None = None
    scores: dict = field(default_factory=dict)   # --candidate-scores column -> (M,) floats
    rows: list[int] = field(default_factory=list)
    image: object = None             # an ImageRef until the picture is resolved; then its file
    image_id: str | None = None      # its path or bytes' hash; once resolved, the content hash of `ingest`
    status: str = schema.OK
    detail: str | None = None


@dataclass
class Candidates:
    groups: list[Group]              # the `ok` groups
    statuses: list[dict]             # one per input row: row, group_id, status, detail
    layout: str
    gold: str | None                 # where the gold came from (a column, or an adapter)


class _Bad(Exception):
    def __init__(self, status: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


def _text(rec: dict, keys: tuple[str, ...], what: str) -> str:
    for k in keys:
        v = rec.get(k)
        if isinstance(v, str) and v.strip():
            return v
        if v is not None and not isinstance(v, str):
            raise _Bad(schema.BAD_TEXT, f"`{k}` is a {type(v).__name__}, not a string")
    raise _Bad(schema.MISSING_FIELD, f"no {what} (one of {', '.join(f'`{k}`' for k in keys)})")


def _numbers(values, name: str, status: str = BAD_GOLD) -> np.ndarray:
    """A list of finite numbers (booleans count 1 / 0)."""
    out = []
    for v in values:
        if isinstance(v, bool):
            v = float(v)
        if not isinstance(v, (int, float)) or not math.isfinite(v):
            raise _Bad(status, f"`{name}` holds {v!r}, not a finite number")
        out.append(float(v))
    return np.array(out, dtype=np.float64)


def _wide_responses(rec: dict) -> tuple[list, np.ndarray | None, str | None]:
    """(responses, gold from an adapter or None, the adapter's name)."""
    if isinstance(rec.get("responses"), list):
        return rec["responses"], None, None
    if isinstance(rec.get("chosen"), list) and isinstance(rec.get("rejected"), list):      # RewardBench 2
        return rec["chosen"] + rec["rejected"], np.array([1.0] * len(rec["chosen"]) + [0.0] * len(rec["rejected"])), \
            "chosen/rejected"
    if isinstance(rec.get("answers"), list):                                                # Coste et al.
        return rec["answers"], None, None
    if rec.get("completions") is not None:                                                 # VLFeedback
        from audit.sources.vlfeedback import ASPECTS, _completions, _mean_rating

        comps = _completions(rec["completions"]) or []
        ratings = [_mean_rating(c.get("annotations"), list(ASPECTS)) for c in comps]
        bad = [r for r in ratings if isinstance(r, str)]
        if bad:
            raise _Bad(BAD_GOLD, f"a completion has no usable rating ({bad[0]})")
        return [c.get("response") for c in comps], np.array(ratings, dtype=np.float64), "completions (mean rating)"
    raise _Bad(schema.BAD_ROW, "no candidate list: expected `responses` (or `chosen` + `rejected`, `answers`, "
                               "`completions`), or one `response` per row")


def _gold_of(value, name: str, m: int) -> np.ndarray:
    if name.endswith("best"):
        idx = value if isinstance(value, list) else [value]
        if not idx or any(not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < m for i in idx):
            raise _Bad(BAD_GOLD, f"`{name}` = {value!r} is not an index (or list of indices) into the {m} responses")
        g = np.zeros(m)
        g[idx] = 1.0
        return g
    if not isinstance(value, list):
        raise _Bad(BAD_GOLD, f"`{name}` is a {type(value).__name__}, expected a list of {m}")
    if len(value) != m:
        raise _Bad(GOLD_LENGTH, f"`{name}` has {len(value)} values for {m} responses")
    return _numbers(value, name)


def _wide_group(i: int, rec: dict, gold_col: str | None, score_cols: list[str]) -> tuple[Group, str | None]:
    responses, gold, adapter = _wide_responses(rec)
    if any(not isinstance(r, str) for r in responses):
        raise _Bad(schema.BAD_TEXT, "a response is not a string")
    g = Group(_group_id(i, rec), _text(rec, PROMPT_KEYS, "prompt"), None, responses, rows=[i],
              image=image_at(rec, *IMAGE_KEYS))
    g.image_ref, g.image_id = _ref_text(g.image), image_key(g.image)
    if len(responses) < 2:
        raise _Bad(TOO_FEW, f"{len(responses)} candidate response(s); best-of-n needs at least 2")
    names = [gold_col] if gold_col else [k for k in GOLD_KEYS if rec.get(k) is not None][:1]
    if names and rec.get(names[0]) is not None:
        gold, adapter = _gold_of(rec[names[0]], names[0], len(responses)), names[0]
    elif gold_col:
        raise _Bad(GOLD_MISSING, f"no `{gold_col}` in this row")
    g.gold = gold
    for c in score_cols:
        v = rec.get(c)
        if not isinstance(v, list) or len(v) != len(responses):
            raise _Bad(SCORE_LENGTH, f"`{c}` has {len(v) if isinstance(v, list) else 'no'} scores for {len(responses)} "
                                     "responses")
        g.scores[c] = _numbers(v, c, schema.SCORE_NOT_FINITE)
    return g, adapter


def _group_id(i: int, rec: dict) -> str:
    return str(next((rec[k] for k in ID_KEYS if rec.get(k) is not None), f"row{i}"))


def _ref_text(ref) -> str | None:
    if ref is None:
        return None
    return ref.path if ref.path else "embedded"


def image_key(ref) -> str | None:
    """What identifies a picture before it is read: its path, or the hash of its embedded bytes."""
    if ref is None:
        return None
    return ref.path or hashlib.sha256(ref.data).hexdigest()


def _long_key(i: int, rec: dict) -> tuple:
    for k in ID_KEYS:
        if rec.get(k) is not None:
            return ("id", str(rec[k]))
    return ("prompt", str(rec.get("prompt")), image_key(image_at(rec, *IMAGE_KEYS)))


def _long_groups(records: list, gold_col: str | None, score_cols: list[str]) -> tuple[list[Group], list, str | None]:
    """Rows of one candidate each, gathered into groups (first appearance order)."""
    order: dict[tuple, list[int]] = {}
    bad = []
    for i, rec in enumerate(records):
        if isinstance(rec, BadRecord):
            bad.append((i, rec))
        else:
            order.setdefault(_long_key(i, rec), []).append(i)
    gold_name = gold_col or next((k for k in LONG_GOLD_KEYS if any(isinstance(r, dict) and r.get(k) is not None
                                                             for r in records)), None)
    groups = []
    for key, rows in order.items():
        recs = [records[i] for i in rows]
        gid = key[1] if key[0] == "id" else f"row{rows[0]}"
        try:
            groups.append(_one_long_group(gid, rows, recs, gold_name, score_cols))
        except _Bad as e:
            groups.append(Group(gid, "", None, [], rows=rows, status=e.status, detail=e.detail))
    return groups, bad, gold_name


def _one_long_group(gid: str, rows: list[int], recs: list[dict], gold_name, score_cols) -> Group:
    prompts = {_text(r, PROMPT_KEYS, "prompt") for r in recs}
    images = {_ref_text(image_at(r, *IMAGE_KEYS)) for r in recs}
    if len(prompts) > 1 or len(images) > 1:
        raise _Bad(INCONSISTENT, f"the rows of group `{gid}` name {len(prompts)} prompts and {len(images)} pictures")
    responses = [r.get("response") for r in recs]
    if any(not isinstance(x, str) for x in responses):
        raise _Bad(schema.BAD_TEXT if any(x is not None for x in responses) else schema.MISSING_FIELD,
                   "a row has no `response` string")
    if len(responses) < 2:
        raise _Bad(TOO_FEW, f"{len(responses)} candidate response(s); best-of-n needs at least 2")
    g = Group(gid, prompts.pop(), images.pop(), responses, rows=rows, image=image_at(recs[0], *IMAGE_KEYS))
    g.image_id = image_key(g.image)
    if gold_name is not None:
        if any(r.get(gold_name) is None for r in recs):
            raise _Bad(GOLD_MISSING, f"a row of group `{gid}` has no `{gold_name}`")
        g.gold = _numbers([r[gold_name] for r in recs], gold_name)
    for c in score_cols:
        g.scores[c] = _numbers([r.get(c) for r in recs], c, schema.SCORE_NOT_FINITE)
    return g


def _layout(records: list) -> str:
    first = next((r for r in records if isinstance(r, dict)), None)
    if first is None:
        raise FormatError("the candidates file holds no readable row")
    return "long" if isinstance(first.get("response"), str) and not isinstance(first.get("responses"), list) else "wide"


def read_candidates(path: Path, workdir: Path, gold_col: str | None = None, score_cols: list[str] = (),
                    need_images: bool = False, image_root: Path | None = None,
                    max_pixels: int = 64_000_000) -> Candidates:
    """Every row of `path` with its status; the usable groups with their pictures resolved (inside the
    image root, verified) when `need_images` (a reward model will look at them)."""
    from audit.sources.readers import iter_records, locate

    src = locate(path)
    records = list(iter_records(src))
    layout = _layout(records)
    if layout == "long":
        groups, bad, gold = _long_groups(records, gold_col, list(score_cols))
    else:
        groups, bad, gold = _wide_groups(records, gold_col, list(score_cols))
    _check_gold_everywhere(groups, gold)
    if need_images:
        _resolve_images(groups, src, workdir, image_root, max_pixels)
    statuses = [{"row": i, "group_id": None, "status": schema.BAD_ROW, "detail": f"{b.where}: {b.detail}"}
                for i, b in bad]
    statuses += [{"row": i, "group_id": g.group_id, "status": g.status, "detail": g.detail}
                 for g in groups for i in g.rows]
    statuses.sort(key=lambda s: s["row"])
    return Candidates([g for g in groups if g.status == schema.OK], statuses, layout, gold)


def _wide_groups(records: list, gold_col: str | None, score_cols: list[str]):
    groups, bad, gold = [], [], None
    for i, rec in enumerate(records):
        if isinstance(rec, BadRecord):
            bad.append((i, rec))
            continue
        try:
            g, adapter = _wide_group(i, rec, gold_col, score_cols)
            gold = gold or adapter
        except _Bad as e:
            g = Group(_group_id(i, rec), "", None, [], rows=[i], status=e.status, detail=e.detail)
        groups.append(g)
    return groups, bad, gold


def _check_gold_everywhere(groups: list[Group], gold: str | None) -> None:
    """Gold is all or nothing: when some groups have it, a usable group without it gets `gold_missing`."""
    if gold is None:
        return
    for g in groups:
        if g.status == schema.OK and g.gold is None:
            g.status, g.detail = GOLD_MISSING, f"other rows have gold (`{gold}`), this one has none"


def _resolve_images(groups: list[Group], src, workdir: Path, image_root: Path | None, max_pixels: int) -> None:
    from audit.images import ImageStore

    root = Path(image_root) if image_root else src.root
    store = ImageStore(workdir, [root, workdir, *src.image_roots], max_pixels, True, source_root=src.root)
    for g in groups:
        if g.status != schema.OK:
            continue
        res = store.add(g.image, root)
        if res.status != schema.OK:
            g.status, g.detail = res.status, res.detail
            continue
        g.image = Path(res.path) if Path(res.path).is_absolute() else Path(workdir) / res.path
        g.image_id = res.image_id
