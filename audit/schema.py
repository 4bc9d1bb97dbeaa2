"""The column contract of the pairs table, in one place.

Every stage reads and writes these names; `DESIGN.md` is the reference. The audited table
(pairs + audit columns) is defined here too as later stages land.
"""

from __future__ import annotations

import pyarrow as pa

# Row statuses. `ok` rows are scored; every other row is kept with its reason (rows in = rows out).
OK = "ok"
BAD_ROW = "bad_row"                      # the source record could not be parsed or has the wrong shape
MISSING_FIELD = "missing_field"          # prompt / chosen / rejected absent in the record
BAD_TEXT = "bad_text"                    # a text field is not a string (number, list, ...)
EMPTY_RESPONSE = "empty_response"        # chosen or rejected is empty or whitespace
IDENTICAL_RESPONSES = "identical_responses"
IMAGE_MISSING = "image_missing"          # no image given, or the file does not exist
IMAGE_CORRUPT = "image_corrupt"          # cannot be decoded (truncated, not an image)
IMAGE_TOO_LARGE = "image_too_large"      # declared pixel count above the limit (decompression bomb)
IMAGE_OUTSIDE_ROOT = "image_outside_root"  # path (or symlink) escapes the dataset root: refused
DUPLICATE = "duplicate"                  # same prompt, responses and picture as an earlier row (texts normalised,
                                         # the picture by perceptual hash: a re-encoded copy is the same picture)

# Set by `score`, not by ingest: a `--mm-scores` reward is NaN, infinite or missing, so the row has no
# multimodal margin (left out of SFC, the weights and the metrics).
SCORE_NOT_FINITE = "score_not_finite"

# A row with one of these has usable texts: `score --text-only` scores it.
IMAGE_STATUSES = (IMAGE_MISSING, IMAGE_CORRUPT, IMAGE_TOO_LARGE, IMAGE_OUTSIDE_ROOT)

STATUSES = (OK, BAD_ROW, MISSING_FIELD, BAD_TEXT, EMPTY_RESPONSE, IDENTICAL_RESPONSES,
            IMAGE_MISSING, IMAGE_CORRUPT, IMAGE_TOO_LARGE, IMAGE_OUTSIDE_ROOT, DUPLICATE)

# Comparisons of a multi-response source (VLFeedback) that do not become pairs. They are not
# rows of the table (no preference exists) and are counted in the ingest report instead.
NOT_PAIRED_REASONS = ("tie", "rating_unparsable", "rating_missing")

# The canonical pairs columns, in order. Source columns that are not consumed follow them under
# their own names; keys seen only after the schema was fixed go to `extra_json`.
PAIRS_SCHEMA = pa.schema([
    pa.field("pair_id", pa.string(), nullable=False),   # stable: content hash + occurrence number
    pa.field("sample_id", pa.string(), nullable=False),  # source row id (or `row<N>`)
    pa.field("source", pa.string(), nullable=False),     # format name (vlfeedback, rlaif-v, ...)
    pa.field("prompt", pa.string()),
    pa.field("chosen", pa.string()),
    pa.field("rejected", pa.string()),
    pa.field("image_path", pa.string()),   # relative = inside the pairs folder's store; absolute = in the source root
    pa.field("image_id", pa.string()),     # sha256 of the image bytes (first 32 hex digits): one image, one id
    pa.field("image_phash", pa.string()),  # perceptual hash (64 hex digits, audit.links): re-encoded copies are close
    pa.field("image_thumb", pa.string()),  # smooth pictures only: 8x8 RGB thumbnail (384 hex digits, audit.links)
    pa.field("prompt_id", pa.string()),    # hash of the prompt text; with image_id it defines groups
    pa.field("margin", pa.float64()),      # e.g. rating difference; null when the source has none
    pa.field("status", pa.string(), nullable=False),
    pa.field("status_detail", pa.string()),  # human-readable reason for a non-ok status
    pa.field("source_record", pa.int64()),   # position of the source record it came from (0 = first read)
    pa.field("source_item", pa.int32()),     # position of the pair among that record's comparisons
])
PAIRS_COLUMNS = tuple(PAIRS_SCHEMA.names)
# Columns a pairs table written by an older version may lack (read as null).
OPTIONAL_COLUMNS = ("image_phash", "image_thumb", "source_record", "source_item")
REQUIRED_COLUMNS = tuple(c for c in PAIRS_COLUMNS if c not in OPTIONAL_COLUMNS)
EXTRA_JSON = "extra_json"

PAIRS_FILE = "pairs.parquet"
REPORT_FILE = "ingest_report.json"
IMAGE_STORE = "images"
# What the app keeps in an audit folder (a rescore leaves them in place, as it leaves the hand tags).
APP_EXPORTS = "app_exports"         # AUDIT_DIR/app_exports/<name>: exports made in the app
APP_SELECTIONS = "app_selections"   # AUDIT_DIR/app_selections/<id>.json: a chart selection's pair ids


def pairs_dir_of(audit_dir, summary: dict):
    """The pairs folder an audit was scored from: `summary.json`'s `pairs_dir` (absolute since it is
    written so), else the audit's own `pairs/` (an older audit stored it relative to where `score` ran,
    or the audit folder was moved with its pairs inside)."""
    from pathlib import Path

    audit_dir = Path(audit_dir)
    stored = Path(summary.get("pairs_dir") or audit_dir / "pairs")
    for cand in (stored, audit_dir / stored, audit_dir / "pairs"):
        if (cand / PAIRS_FILE).is_file():
            return cand
    return audit_dir / "pairs"


# When a reviewer swaps a pair's chosen and rejected (`export --tags`, tag `swap`), every column that
# depends on which side is chosen is flipped, recomputed from the flipped ones, or dropped, by these
# rules over the column contract (the audited columns of DESIGN.md and the sides' own columns):
#   chosen / rejected, chosen_X / rejected_X (models, ratings, ...)  exchanged
#   *_margin (r(chosen) - r(rejected)) and the cue columns           negated
#   *_prob (sigma of a margin)                                        1 - p
#   *_loss (-log sigma of a margin), sfc, is_shortcut                 recomputed from the flipped margins
#   *_on_chosen (flags, e.g. synthetic truth)                         negated
#   margin (the source's own rating difference: the swap overrules it) and a format's `oriented` columns  dropped
SWAP_DROPPED = ("margin",)


def swap_rule(name: str, columns: set[str], cue_columns: set[str], dropped: set[str] = frozenset()) -> tuple | None:
    """How column `name` changes when chosen and rejected trade places: None (it does not depend on
    the side), ("exchange", other), ("negate",), ("complement",), ("not",), ("loss", margin column),
    ("sfc",), ("is_shortcut",) or ("drop",). `columns`: the table's; `cue_columns`: its cue features;
    `dropped`: the source formats' own orientation-dependent columns."""
    for a, b in (("chosen", "rejected"), ("rejected", "chosen")):
        if name == a or (name.startswith(a + "_") and b + name[len(a):] in columns):
            return ("exchange", b + name[len(a):])
    if name in SWAP_DROPPED or name in dropped:
        return ("drop",)
    if name.endswith("_margin") or name in cue_columns:
        return ("negate",)
    if name.endswith("_prob"):
        return ("complement",)
    if name.endswith("_loss") and name[:-len("loss")] + "margin" in columns:
        return ("loss", name[:-len("loss")] + "margin")
    if name in ("sfc", "is_shortcut"):
        return (name,)
    if name.endswith("_on_chosen"):
        return ("not",)
    return None
