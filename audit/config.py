"""One dataclass per command, every field with help text, validated in `__post_init__`.

The CLI builds its options from these fields (`add_arguments`), so an option cannot exist
without help text; each run writes its config beside its outputs (`to_dict`).
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from audit.errors import ConfigError


def opt(default: Any = dataclasses.MISSING, *, help: str, flag: str | None = None,
        short: str | None = None, positional: bool = False, choices: tuple | None = None,
        metavar: str | None = None, nargs: str | None = None, ge: float | None = None, gt: float | None = None,
        le: float | None = None, lt: float | None = None, what: str | None = None) -> Any:
    """A dataclass field that is also a CLI option (`--name`, or positional). A numeric option declares
    its valid range (`ge`/`gt`/`le`/`lt`); `check_bounds` enforces it for every config in one place."""
    meta = {"help": help, "flag": flag, "short": short, "positional": positional,
            "choices": choices, "metavar": metavar, "nargs": nargs,
            "bounds": {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None},
            "what": what}
    if default is dataclasses.MISSING:
        return field(metadata=meta)
    return field(default=default, metadata=meta)


def _base_type(tp: Any) -> type:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if args else tp


# The weight schemes by name, for `--help` and argparse (tests/test_cli.py checks it against audit.schemes.SCHEMES,
# which config does not import: `--help` stays fast).
SCHEME_CHOICES = ("sfc", "sfc-residual", "debias", "ipw", "jtt", "none")

# `--help` sections: option name -> section title (the rest stay under "options").
HELP_GROUPS = {
    "reward model (audit your own RM with --rm)": ("rm", "rm_blank", "rm_max_length", "token_budget", "compile"),
    "fine-tuned text probe (--text-probe finetune)": ("finetune_model", "finetune_epochs", "finetune_lr",
                                                      "finetune_batch"),
    "weights (re-choose them later with `export --scheme`)": ("scheme", "threshold", "clip", "ipw_floor", "jtt_factor"),
    "speed and memory": ("workers", "device", "fit_pairs", "mm_dims", "cache_dir", "chunk", "batch_size", "max_length"),
}


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add one argparse option per field of the config dataclass `cls`, in `HELP_GROUPS` sections."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    groups = {}
    for title, members in HELP_GROUPS.items():
        if len(names & set(members)) > 1:          # a section only where a command has several of its options
            group = parser.add_argument_group(title)
            groups.update({name: group for name in members if name in names})
    for f in dataclasses.fields(cls):
        target = groups.get(f.name, parser)
        m = f.metadata
        tp = _base_type(hints[f.name])
        kwargs: dict[str, Any] = {"help": m["help"]}
        if m.get("choices"):
            kwargs["choices"] = m["choices"]
        if m.get("metavar"):
            kwargs["metavar"] = m["metavar"]
        if m.get("positional"):
            if tp is list:
                target.add_argument(f.name, nargs=m.get("nargs") or "+", **kwargs)
                continue
            if f.default is not dataclasses.MISSING:
                kwargs["nargs"] = "?"
                kwargs["default"] = f.default
            target.add_argument(f.name, type=tp, **kwargs)
            continue
        names = [m.get("flag") or "--" + f.name.replace("_", "-")]
        if m.get("short"):
            names.insert(0, m["short"])
        if tp is bool:
            kwargs["action"] = "store_true" if f.default is False else argparse.BooleanOptionalAction
            kwargs["default"] = f.default
        else:
            kwargs["type"] = tp
            if f.default is dataclasses.MISSING:
                kwargs["required"] = True
            else:
                kwargs["default"] = f.default
                if f.default is not None:
                    kwargs["help"] += f" (default: {f.default})"
        target.add_argument(*names, dest=f.name, **kwargs)


def _range_text(b: dict) -> str:
    lo = ("[", b["ge"]) if "ge" in b else (("(", b["gt"]) if "gt" in b else None)
    hi = ("]", b["le"]) if "le" in b else (("(", b["lt"]) if "lt" in b else None)
    if lo and hi:
        return f"in {lo[0]}{lo[1]:g}, {hi[1]:g}{')' if hi[0] == '(' else ']'}"
    if lo:
        return f"at least {lo[1]:g}" if lo[0] == "[" else f"above {lo[1]:g}"
    return f"at most {hi[1]:g}" if hi[0] == "]" else f"below {hi[1]:g}"


def check_bounds(cfg: Any) -> None:
    """Every numeric option of a config within its declared range, finite, and of its type (a bool is
    not a number here): the one place where `--batch-size -5` or `--lr nan` is refused, for every
    command and every caller of the Python API."""
    import math

    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        tp, v = _base_type(hints[f.name]), getattr(cfg, f.name)
        if tp not in (int, float) or v is None:
            continue
        name = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        ok_type = (isinstance(v, int) if tp is int else isinstance(v, (int, float))) and not isinstance(v, bool)
        if not ok_type or (isinstance(v, float) and not math.isfinite(v)):
            raise ConfigError(f"`{name}` must be a finite {'integer' if tp is int else 'number'}, got {v!r}")
        b = f.metadata.get("bounds") or {}
        if (("ge" in b and v < b["ge"]) or ("gt" in b and v <= b["gt"]) or ("le" in b and v > b["le"])
                or ("lt" in b and v >= b["lt"])):
            what = f.metadata.get("what")
            raise ConfigError(f"`{name}` must be {what + ' ' if what else ''}{_range_text(b)}, got {v!r}")


def from_args(cls: type, ns: argparse.Namespace) -> Any:
    return cls(**{f.name: getattr(ns, f.name) for f in dataclasses.fields(cls)})


def _check_device(device: str) -> None:
    import re

    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device or ""):
        raise ConfigError(f"`--device` must be `auto`, `cpu`, `cuda` or `cuda:N`, got {device!r}")


def to_dict(cfg: Any) -> dict:
    """JSON-ready dict of a config (paths as strings)."""
    out = {}
    for k, v in dataclasses.asdict(cfg).items():
        out[k] = str(v) if isinstance(v, Path) else v
    return out


# Settings that only matter with another one (the fine-tuned text probe, a reward model), and the ones
# that say where files were rather than how the audit was made (the card and the
# audited table's Parquet metadata list the rest).
_ONLY_WITH = {"finetune_": lambda c: c.get("text_probe") == "finetune" or "finetune" in str(c.get("stack")),
              "rm_": lambda c: bool(c.get("rm")), "stack": lambda c: c.get("text_probe") == "stack"}
_NOT_HOW = {"out", "overwrite", "cache_dir", "workers", "chunk", "device", "compile", "token_budget"}


def settings_used(config: dict) -> dict:
    """The score settings that shaped this audit: set, and relevant to the probes that ran."""
    out = {}
    for k, v in config.items():
        if v is None or v is False and k != "text_only" or k in _NOT_HOW:
            continue
        if any(k.startswith(prefix) and not used(config) for prefix, used in _ONLY_WITH.items()):
            continue
        out[k] = v
    return out


CONTAINERS = ("parquet", "jsonl", "json", "hf")
# Best-of-N: how the synthetic policy places the style cue (audit.synth.candidates.REGIMES)
BON_REGIMES = ("clean", "aligned", "neutral", "adverse")


@dataclass
class SynthConfig:
    """`shortcut-audit synth`: write a built-in synthetic environment in a source format."""

    env: str | None = opt(None, help="built-in environment name (`shortcut-audit synth --list` shows them)")
    out: Path | None = opt(None, short="-o", help="output folder; the data file(s) and images are written inside it")
    overwrite: bool = opt(False, help="replace a non-empty `-o` folder that shortcut-audit wrote earlier, whole "
                          "(its earlier contents are deleted once this run finishes; a folder of your own is never deleted)")
    n: int = opt(1000, ge=1, help="number of preference pairs")
    seed: int = opt(0, ge=0, help="random seed; the same seed gives the same bytes")
    format: str = opt("pairs", help="source format to write: pairs, vlfeedback, rlaif-v, rlhf-v, povid, "
                      "trl, vl-rewardbench, alignrm")
    container: str = opt("parquet", choices=CONTAINERS,
                         help="container of the generic `pairs` format (other formats use their own)")
    p: float | None = opt(None, ge=0, le=1, what="a probability", help="override the environment's cue strength: probability that the "
                          "planted cue sits on the chosen side (0.5 = noise, 1-p reverses it)")
    pairs_per_image: int = opt(1, ge=1, help="pairs drawn about each image (VLFeedback-like sharing when > 1)")
    image_size: int = opt(64, ge=16, le=1024, help="side of the square RGB images in pixels")
    holdout: int = opt(0, ge=0, help="also write a held-out split of this many pairs of the same distribution: "
                       "the training set goes to OUT/train, the held-out one to OUT/heldout (pass it to "
                       "`eval --iid heldout`)")
    plant: int = opt(0, ge=0, help="make the first N pairs copies of a training set's pairs (see `--plant-seed`), "
                     "their pictures re-encoded as JPEG and resized: a contaminated eval set to try `overlap` on")
    plant_seed: int = opt(0, ge=0, help="with `--plant`: the `--seed` of the training set the copies come from")
    candidates: int = opt(0, ge=0, metavar="M", help="write a Best-of-N candidates file instead of pairs: `--n` "
                          "prompts, each with M responses drawn from a known policy (right or wrong about the picture, "
                          "the environment's cue placed by `--regime`), with `correct` and `cued` flags, for "
                          "`eval --best-of-n`; `--container` picks the file type")
    regime: str = opt("adverse", choices=BON_REGIMES, help="`--candidates`: how the cue goes with correctness: `clean` "
                      "(no cue), `aligned` (mostly on right answers), `neutral`, `adverse` (mostly on wrong ones: the lure)")

    def __post_init__(self) -> None:
        check_bounds(self)
        if self.candidates and (self.format != "pairs" or self.holdout or self.plant or self.pairs_per_image != 1):
            raise ConfigError("`--candidates` writes a candidates file (its file type from `--container`); drop "
                              "`--format`, `--holdout`, `--plant` and `--pairs-per-image`, which shape pairs")
        if self.env is None:
            raise ConfigError("`--env` is required; `shortcut-audit synth --list` shows the environments")
        if self.out is None:
            raise ConfigError("`-o/--out` is required: the folder to write the environment into")
        self.out = Path(self.out)
        if self.n < 1:
            raise ConfigError(f"`--n` must be at least 1, got {self.n}")
        if self.p is not None and not 0.0 <= self.p <= 1.0:
            raise ConfigError(f"`--p` must be a probability in [0, 1], got {self.p}")
        if self.pairs_per_image < 1:
            raise ConfigError(f"`--pairs-per-image` must be at least 1, got {self.pairs_per_image}")
        if self.holdout < 0:
            raise ConfigError(f"`--holdout` must be 0 or more, got {self.holdout}")
        if not 16 <= self.image_size <= 1024:
            raise ConfigError(f"`--image-size` must be in [16, 1024], got {self.image_size}")
        if self.container not in CONTAINERS:
            raise ConfigError(f"`--container` must be one of {', '.join(CONTAINERS)}, got {self.container!r}")


VERIFY_MODES = ("full", "header")


@dataclass
class IngestConfig:
    """`shortcut-audit ingest`: any supported source -> the canonical pairs table."""

    source: Path = opt(positional=True, metavar="SOURCE",
                       help="source file or folder (JSONL, JSON, Parquet, HF save_to_disk folder, "
                       "a folder of shards, or a pairs folder)")
    out: Path = opt(short="-o", help="output pairs folder (pairs.parquet, images/, ingest_report.json)")
    overwrite: bool = opt(False, help="replace a non-empty `-o` folder that shortcut-audit wrote earlier, whole "
                          "(its earlier contents are deleted once this run finishes; a folder of your own is never deleted)")
    format: str | None = opt(None, help="source format; auto-detected when omitted: vlfeedback, rlaif-v, "
                             "rlhf-v, povid, trl, vl-rewardbench, alignrm, pairs")
    image_root: Path | None = opt(None, help="folder that image paths resolve inside (default: the folder "
                                  "that holds the source file); paths that escape it are refused")
    columns: str | None = opt(None, metavar="CANON=SRC,...",
                              help="map source column names onto the canonical ones, e.g. "
                              "`prompt=question,chosen=good,rejected=bad,image=img`")
    max_pixels: int = opt(64_000_000, ge=1, help="refuse images whose declared width x height exceeds this "
                          "(decompression bombs)")
    verify_images: str = opt("full", choices=VERIFY_MODES,
                             help="`full` decodes each unique image once (catches truncated files); "
                             "`header` reads only its header (faster, misses truncation)")
    limit: int | None = opt(None, ge=1, help="read only the first N source records")
    batch_rows: int = opt(8192, ge=1, help="rows per written batch (memory stays bounded by it)")
    copy_images: bool = opt(False, help="copy images given as file paths into the pairs folder (embedded images "
                            "always are), so that moving or deleting the source does not break the audit and the app")

    def __post_init__(self) -> None:
        check_bounds(self)
        self.source = Path(self.source)
        self.out = Path(self.out)
        if self.image_root is not None:
            self.image_root = Path(self.image_root)
        if self.max_pixels < 1:
            raise ConfigError(f"`--max-pixels` must be positive, got {self.max_pixels}")
        if self.verify_images not in VERIFY_MODES:
            raise ConfigError(f"`--verify-images` must be one of {', '.join(VERIFY_MODES)}, "
                              f"got {self.verify_images!r}")
        if self.limit is not None and self.limit < 0:
            raise ConfigError(f"`--limit` must be >= 0, got {self.limit}")
        if self.batch_rows < 1:
            raise ConfigError(f"`--batch-rows` must be positive, got {self.batch_rows}")

    def column_map(self) -> dict[str, str]:
        """Parse `--columns` into {source_name: canonical_name}."""
        return column_map(self.columns)


def column_map(columns: str | None) -> dict[str, str]:
    """`--columns CANON=SRC,...` (of `ingest`, and of `score` on a raw source) as {source_name: canonical_name}."""
    mapping: dict[str, str] = {}
    for part in (columns or "").split(","):
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise ConfigError(f"`--columns` entry {part!r} is not CANON=SRC; "
                              "write e.g. `--columns prompt=question,chosen=good`")
        canon, src = (s.strip() for s in part.split("=", 1))
        if not canon or not src:
            raise ConfigError(f"`--columns` entry {part!r} has an empty name")
        mapping[src] = canon
    return mapping


@dataclass
class DemoConfig:
    """`shortcut-audit demo`: the pipeline on built-in synthetic data, offline."""

    out: Path = opt(Path("shortcut-audit-demo"), short="-o", help="folder for every output of the demo")
    overwrite: bool = opt(False, help="start afresh: replace what an earlier run left in `-o` (without it, a run "
                          "into its own earlier folder resumes or updates it; a folder of your own is never deleted)")
    n: int = opt(600, ge=10, help="pairs per synthetic environment")
    seed: int = opt(0, ge=0, help="random seed")

    def __post_init__(self) -> None:
        check_bounds(self)
        self.out = Path(self.out)
        if self.n < 10:
            raise ConfigError(f"`--n` must be at least 10, got {self.n}")


# The text probe's component model families (`audit.probes.stack`): `--text-probe` and `--stack` names.
TEXT_COMPONENTS = ("tokens", "embedding", "lexical", "cue", "finetune")


@dataclass
class ScoreConfig:
    """`shortcut-audit score`: fit text-only shortcut models out-of-fold; write SFC, weights and cues."""

    source: Path = opt(positional=True, metavar="SOURCE_OR_PAIRS_DIR",
                       help="a pairs folder from `ingest`, or any source `ingest` reads (ingested on the way)")
    out: Path = opt(short="-o", help="audit folder: audited.parquet, summary.json, config.json, cache/")
    overwrite: bool = opt(False, help="start afresh: replace what an earlier run left in `-o` (without it, a run "
                          "into its own earlier folder resumes or updates it; a folder of your own is never deleted)")
    scheme: str = opt("debias", choices=SCHEME_CHOICES, help="weight scheme (docs/SCORE.md: why debias; `sfc` needs the "
                      "paper's multimodal side: `--rm` or `--mm-scores`, else `sfc-residual`)")
    folds: int = opt(5, ge=2, help="cross-fitting folds K (grouped by image, source row and specific prompt)")
    seed: int = opt(0, ge=0, help="random seed (fold order, inner splits, head initialisation)")
    text_encoder: str = opt("minilm", help="text encoder: `minilm` (all-MiniLM-L6-v2, offline) or any HF "
                            "encoder / sentence-transformers folder by id or local path")
    pooling: str = opt("auto", choices=("auto", "mean", "cls", "last"),
                       help="text pooling; `auto` follows a sentence-transformers folder, else mean; `last` "
                       "makes a decoder LLM usable as the encoder")
    image_encoder: str = opt("pixels", help="image features: `pixels` (offline colour/layout featuriser) or "
                             "any HF vision encoder (CLIP, SigLIP, ...) by id or local path")
    mm_scores: str | None = opt(None, metavar="CHOSEN_COL,REJECTED_COL",
                                help="use your own multimodal RM's rewards from these pairs-table columns "
                                "(or one margin column) as the mm_* columns instead of the multimodal probe")
    rm: str | None = opt(None, metavar="MODEL",
                         help="audit this multimodal reward model (HF Qwen2-VL / Qwen2.5-VL / Llava folder or id with "
                         "a reward head, or a `train` run folder): score each pair with its image and with a blank "
                         "white image; writes rm_margin, rm_blank_margin, rm_flip and uses rm_margin as mm_*")
    rm_blank: str = opt("reference", choices=("reference", "match"),
                        help="`--rm`: the blank image: `reference` (white 224x224, as the paper's code) or `match` "
                        "(white at each image's own size, so models whose vision-token count follows the image "
                        "size, like Qwen2-VL, see as many image tokens as with the real image)")
    rm_max_length: int = opt(2048, ge=16, help="`--rm`: max tokens per sequence, image tokens included (longer texts "
                             "are cut at the end)")
    token_budget: int = opt(65536, ge=64, help="`--rm` / finetune probe: max tokens per batch after padding (batch "
                            "size x longest sequence); bounds GPU memory; an out-of-memory batch is split and retried")
    compile: bool = opt(False, help="`--rm`: torch.compile the reward model's language model (dynamic shapes): "
                        "faster batches on a GPU after a one-time warm-up of a minute or two; for large datasets")
    workers: int = opt(2, ge=0, help="`--rm`: DataLoader worker processes that decode images and tokenise ahead of the "
                       "GPU (0: in the main process)")
    text_probe: str = opt("stack", choices=("stack",) + TEXT_COMPONENTS,
                          help="text-only shortcut model: `stack` (the `--stack` components combined by a small model "
                          "fitted with nested cross-fitting: the strongest text-only model, the default), or one "
                          "component alone: `tokens` (ridge head on static token embeddings of the text encoder), "
                          "`embedding` (ridge head on the text encoder's embeddings), `lexical` (naive-Bayes log-odds "
                          "of one-sided word n-grams), `cue` (the hand-written cues), `finetune` (a text RM "
                          "fine-tuned per fold; for GPUs)")
    stack: str = opt("auto", metavar="auto|COMPONENT,...",
                     help="`--text-probe stack`: the components to combine, from " + ", ".join(TEXT_COMPONENTS)
                     + "; `auto` = tokens,lexical,cue plus the text encoder itself (`embedding`) on a GPU, on up to "
                     "2,000 scored pairs on CPU, or when `--text-encoder` names another model; `finetune` adds "
                     "K(K+1)/2 fine-tunings")
    text_only: bool = opt(False, help="audit the texts alone, without the pictures (not downloaded yet, a JSONL without "
                          "its image folder): rows whose image is missing or unreadable are scored too; no multimodal "
                          "side, so the mm_* columns and SFC are null and the weights come from a text-only scheme "
                          "(debias, ipw, jtt, none)")
    phrases: bool = opt(True, help="list the phrases that sit on one side far more often than the answers' lengths "
                        "explain (`summary.json` `phrases`, `function_words`, `slice_phrases`); `--no-phrases` skips it")
    finetune_model: str = opt("minilm", help="`--text-probe finetune`: the text model to fine-tune (`minilm` "
                              "or any HF model by id or local path; a reward head is added)")
    finetune_epochs: int = opt(2, ge=1, help="`--text-probe finetune`: epochs per fold")
    finetune_lr: float = opt(5e-5, gt=0, help="`--text-probe finetune`: AdamW learning rate (linear decay)")
    finetune_batch: int = opt(16, ge=1, help="`--text-probe finetune`: pairs per optimiser step")
    device: str = opt("auto", help="`auto` (CUDA with bf16 when present, else CPU), `cpu`, `cuda`, `cuda:1`; "
                      "under torchrun `cuda` is each rank's own GPU")
    threshold: float = opt(0.8, ge=0.5, lt=1, help="`is_shortcut` = text_prob >= threshold")
    clip: float | None = opt(None, gt=1, help="cap on the normalised weight (re-normalised after capping)")
    ipw_floor: float = opt(0.05, gt=0, lt=0.5, help="`ipw`: text_prob is floored here before 1/text_prob")
    jtt_factor: float = opt(5.0, gt=0, help="`jtt`: weight of pairs the text model gets wrong")
    fit_pairs: int = opt(100_000, ge=100, help="each iteratively fitted head (cue model, multimodal probe, fine-tuned text "
                         "component) is fitted on at most this many pairs (a seeded sample of its training folds) and "
                         "scores the rest in chunks: bounds the fitting memory (the text probe's ridge and naive-Bayes "
                         "components use every pair)")
    mm_dims: int = opt(32, ge=2, le=128, help="PCA components of the text difference and of the image features whose outer "
                       "product feeds the bilinear multimodal head")
    cache_dir: Path | None = opt(None, help="embedding cache (default: AUDIT_DIR/cache); share it across "
                                 "runs to never encode the same text or image twice")
    chunk: int = opt(2048, ge=1, help="items per cache chunk: the unit that is saved, resumed and (under torchrun) "
                     "given to one rank")
    batch_size: int = opt(64, ge=1, help="encoder batch size")
    max_length: int = opt(256, ge=8, help="encoder max tokens per text")
    trust_remote_code: bool = opt(False, help="allow custom model code from the model folder (off by default)")
    format: str | None = opt(None, help="source format when SOURCE is not a pairs folder (see `ingest`)")
    image_root: Path | None = opt(None, help="image root when SOURCE is not a pairs folder (see `ingest`)")
    columns: str | None = opt(None, metavar="CANON=SRC,...",
                              help="when SOURCE is not a pairs folder: map its column names onto the canonical ones "
                              "on the way in, as `ingest --columns` does, e.g. `prompt=question,chosen=good,"
                              "rejected=bad,image=img`")

    def __post_init__(self) -> None:
        check_bounds(self)
        from audit.schemes import check_scheme

        column_map(self.columns)          # a malformed mapping is refused before anything runs

        self.source, self.out = Path(self.source), Path(self.out)
        if self.text_only and (self.rm or self.mm_scores):
            raise ConfigError("`--text-only` audits without a multimodal side; drop `--rm` / `--mm-scores`, or drop "
                              "`--text-only` to use them")
        check_scheme(self.scheme, "text-only" if self.text_only else "paper" if (self.rm or self.mm_scores) else "residual")
        if self.folds < 2:
            raise ConfigError(f"`--folds` must be at least 2, got {self.folds}")
        if not 0.5 <= self.threshold < 1.0:
            raise ConfigError(f"`--threshold` must be in [0.5, 1), got {self.threshold}")
        if self.clip is not None and self.clip <= 1.0:
            raise ConfigError(f"`--clip` must be above 1 (weights have mean 1), got {self.clip}")
        if not 0.0 < self.ipw_floor < 0.5:
            raise ConfigError(f"`--ipw-floor` must be in (0, 0.5), got {self.ipw_floor}")
        if self.fit_pairs < 100:
            raise ConfigError(f"`--fit-pairs` must be at least 100, got {self.fit_pairs}")
        if not 2 <= self.mm_dims <= 128:
            raise ConfigError(f"`--mm-dims` must be in [2, 128], got {self.mm_dims}")
        if self.jtt_factor <= 0:
            raise ConfigError(f"`--jtt-factor` must be positive, got {self.jtt_factor}")
        if self.chunk < 1:
            raise ConfigError(f"`--chunk` must be at least 1, got {self.chunk}")
        if self.token_budget < 64:
            raise ConfigError(f"`--token-budget` must be at least 64 tokens, got {self.token_budget}")
        if self.rm_max_length < 16:
            raise ConfigError(f"`--rm-max-length` must be at least 16, got {self.rm_max_length}")
        if self.workers < 0:
            raise ConfigError(f"`--workers` must be 0 or more, got {self.workers}")
        if self.finetune_epochs < 1 or self.finetune_batch < 1 or self.finetune_lr <= 0:
            raise ConfigError("`--finetune-epochs` and `--finetune-batch` must be at least 1 and `--finetune-lr` positive")
        if self.stack != "auto":
            parts = [c.strip() for c in self.stack.split(",") if c.strip()]
            bad = [c for c in parts if c not in TEXT_COMPONENTS]
            if bad or not parts or len(set(parts)) != len(parts):
                raise ConfigError(f"`--stack` must be `auto` or distinct components from {', '.join(TEXT_COMPONENTS)} "
                                  f"separated by commas, got {self.stack!r}")
        if self.rm and self.mm_scores:
            raise ConfigError("`--rm` and `--mm-scores` both name the multimodal scores; pass one")
        if self.cache_dir is not None:
            self.cache_dir = Path(self.cache_dir)
        if self.image_root is not None:
            self.image_root = Path(self.image_root)


EXPORT_MODES = ("weight", "prune", "resample")
# A likely label swap: the multimodal side prefers the rejected answer with p(rejected) = 1 - mm_prob at
# least this (`audit.swaps`; the app's "Likely label swaps" page, `export --flag-swaps`).
SWAP_THRESHOLD = 0.8
EXPORT_FORMATS = ("parquet", "hf", "alignrm", "trl", "source")


@dataclass
class ExportConfig:
    """`shortcut-audit export`: an audit -> a reweighted, pruned or resampled dataset for a trainer."""

    audit: Path = opt(positional=True, metavar="AUDIT_DIR", help="audit folder written by `score`")
    out: Path = opt(short="-o", help="output folder")
    overwrite: bool = opt(False, help="replace a non-empty `-o` folder that shortcut-audit wrote earlier, whole "
                          "(its earlier contents are deleted once this run finishes; a folder of your own is never deleted)")
    mode: str = opt("weight", choices=EXPORT_MODES,
                    help="`weight`: every scored pair with its weight; `prune`: drop shortcut pairs (or the "
                    "lowest-weight fraction, `--prune-fraction`); `resample`: draw `--size` pairs with "
                    "probability proportional to weight")
    format: str = opt("parquet", choices=EXPORT_FORMATS,
                      help="`parquet` (zstd, embedded images), `hf` (save_to_disk, Image feature), `alignrm` "
                      "(JSONL + images), `trl` (conversational + images), `source` (the source's own format and "
                      "container: each exported record as it was read, with its own picture, plus `weight` and "
                      "`audit_weight`; VLFeedback per pair in `pair_weights`)")
    scheme: str | None = opt(None, choices=SCHEME_CHOICES, help="re-choose the weight scheme without re-scoring "
                             "(sfc or sfc-residual, as the audit's `sfc_kind` says); default: the audit's weights")
    clip: float | None = opt(None, gt=1, help="cap on the normalised weight when re-weighting")
    ipw_floor: float = opt(0.05, gt=0, lt=0.5, help="`ipw` text_prob floor when re-weighting")
    jtt_factor: float = opt(5.0, gt=0, help="`jtt` factor when re-weighting")
    prune_fraction: float | None = opt(None, ge=0, lt=1, help="`prune`: drop this fraction of pairs with the lowest weight "
                                       "instead of the `is_shortcut` pairs")
    size: int | None = opt(None, ge=1, help="`resample`: number of pairs to draw (default: the number of scored pairs)")
    seed: int = opt(0, ge=0, help="`resample` seed: the same seed draws the same dataset")
    container: str = opt("parquet", choices=("parquet", "hf"), help="`trl` format container")
    tags: bool = opt(False, help="honour the tags set in the app (AUDIT_DIR/tags.parquet): `exclude` pairs are "
                     "left out, `keep` pairs are never pruned, `swap` pairs are written with chosen and rejected "
                     "swapped and every column that depends on the side flipped (margins, probabilities, losses, SFC, "
                     "cues, `is_shortcut`, the sides' models and ratings; the source's rating `margin` dropped), with "
                     "the mean weight of the others (their scores were for the other label); a `tag` column is added")
    flag_swaps: bool = opt(False, help="add a boolean `likely_swap` column: the pairs whose multimodal side "
                           "confidently prefers the rejected answer (1 - mm_prob >= `--swap-threshold`), the app's "
                           "\"Likely label swaps\"; computed on the rows as written (after `--tags` swaps). Needs an "
                           "audit with a multimodal side")
    swap_threshold: float | None = opt(None, ge=0.5, lt=1, what="a probability",
                                       help=f"`--flag-swaps`: flag a pair when its multimodal p(rejected) = 1 - mm_prob is "
                                       f"at least this (default {SWAP_THRESHOLD})")

    def __post_init__(self) -> None:
        check_bounds(self)
        from audit.schemes import SCHEMES

        if self.swap_threshold is not None and not self.flag_swaps:
            raise ConfigError("`--swap-threshold` only applies with `--flag-swaps`; add `--flag-swaps`, or drop it")

        self.audit, self.out = Path(self.audit), Path(self.out)
        if self.scheme is not None:
            SCHEMES.get_or_raise(self.scheme)
        if self.mode not in EXPORT_MODES:
            raise ConfigError(f"`--mode` must be one of {', '.join(EXPORT_MODES)}, got {self.mode!r}")
        if self.format not in EXPORT_FORMATS:
            raise ConfigError(f"`--format` must be one of {', '.join(EXPORT_FORMATS)}, got {self.format!r}")
        if self.prune_fraction is not None and not 0.0 <= self.prune_fraction < 1.0:
            raise ConfigError(f"`--prune-fraction` must be in [0, 1), got {self.prune_fraction}")
        if self.size is not None and self.size < 1:
            raise ConfigError(f"`--size` must be at least 1, got {self.size}")
        if self.clip is not None and self.clip <= 1.0:
            raise ConfigError(f"`--clip` must be above 1 (weights have mean 1), got {self.clip}")


@dataclass
class CardConfig:
    """`shortcut-audit card`: a Hugging Face dataset card (README.md + figures) generated from an audit."""

    audit: Path = opt(positional=True, metavar="AUDIT_DIR", help="audit folder written by `score`")
    out: Path = opt(Path("data_cards"), short="-o", help="cards folder; the card goes to OUT/NAME/README.md")
    overwrite: bool = opt(False, help="replace OUT/NAME even when another shortcut-audit command wrote it (an "
                          "earlier card of that name is always replaced; a folder of your own is never deleted)")
    name: str | None = opt(None, help="card name (default: the audit folder's name)")
    license: str = opt("unknown", help="license of the audited data for the YAML header (e.g. cc-by-nc-4.0)")
    source_dataset: str | None = opt(None, help="Hugging Face id of the source dataset, for `source_datasets`")
    export: Path | None = opt(None, help="an export folder to describe (its export_report.json)")
    figures: str = opt("auto", choices=("auto", "png", "html"),
                       help="`png` needs kaleido and a Chrome/Chromium; `auto` falls back to labelled HTML charts")
    examples: int = opt(1, ge=0, help="example pairs shown per top cue")

    def __post_init__(self) -> None:
        check_bounds(self)
        self.audit, self.out = Path(self.audit), Path(self.out)
        if self.export is not None:
            self.export = Path(self.export)
        if self.examples < 0:
            raise ConfigError(f"`--examples` must be >= 0, got {self.examples}")


@dataclass
class AppConfig:
    """`shortcut-audit app`: open an audit in the Streamlit app (reads precomputed results, never scores)."""

    audit: Path = opt(positional=True, metavar="AUDIT_DIR", help="audit folder written by `score`")
    host: str = opt("127.0.0.1", help="address to bind; the default serves this machine only")
    port: int = opt(8501, ge=1, le=65535, help="port to serve on")
    compare: Path | None = opt(None, help="a second audit folder for the Compare page")
    open: bool = opt(False, help="open a browser window on the app (without it the app is served headless: no "
                     "browser, never a first-run prompt, so it also runs in the background, over SSH or in CI)")
    headless: bool = opt(False, help="accepted for older scripts; serving headless is the default")

    def __post_init__(self) -> None:
        check_bounds(self)
        self.audit = Path(self.audit)
        if self.compare is not None:
            self.compare = Path(self.compare)
        if not 1 <= self.port <= 65535:
            raise ConfigError(f"`--port` must be in 1..65535, got {self.port}")
        for p, what in ((self.audit, "AUDIT_DIR"), (self.compare, "`--compare`")):
            if p is None:
                continue
            if not p.exists():
                raise ConfigError(f"{what} `{p}` does not exist (looked for `{p.absolute()}`); pass the folder that "
                                  "`shortcut-audit score -o` wrote")
            if not (p / "audited.parquet").is_file():
                raise ConfigError(f"`{p}` is not an audit folder (no audited.parquet); run `shortcut-audit score` first")


TRAIN_METHODS = ("standard", "weighted", "shortcut-aware")
TRAINERS = ("builtin", "trl")


@dataclass
class TrainConfig:
    """`shortcut-audit train`: a Bradley-Terry reward model, standard, weighted or shortcut-aware."""

    data: Path = opt(positional=True, metavar="DATA", help="training pairs: an audit or pairs folder, an export, or a source")
    out: Path = opt(short="-o", help="run folder: checkpoint, config, metrics log")
    overwrite: bool = opt(False, help="start afresh: replace what an earlier run left in `-o` (without it, a run "
                          "into its own earlier folder resumes or updates it; a folder of your own is never deleted)")
    method: str = opt("standard", choices=TRAIN_METHODS,
                      help="`standard` BT; `weighted` BT with the data's `weight` column (or `--scheme`); "
                      "`shortcut-aware` the paper's dynamic two-branch loss")
    trainer: str = opt("builtin", choices=TRAINERS,
                       help="`builtin`: this package's loop; `trl`: Hugging Face TRL on an `export --format trl` folder "
                       "(needs the `[trl]` extra and `--model FOLDER`: DPO for a causal or vision-language model, "
                       "reward training for a sequence-classification model; `weighted` uses the export's `weight`)")
    model: str = opt("small", help="`small`: the small multimodal RM (CPU, minutes); or a folder with a Qwen2-VL / "
                     "Qwen2.5-VL / Llava model: scalar head at the last non-pad token, vision tower frozen")
    vision: str = opt("pretrained", choices=("pretrained", "scratch"),
                      help="`small` model's image encoder: `pretrained` on synthetic scenes and frozen (the stand-in "
                      "for a VLM's frozen vision tower), or `scratch`: trained with the reward")
    train_vision: bool = opt(False, help="train the image encoder too: the pretrained `small` encoder, or a VLM's "
                             "vision tower (frozen by default)")
    vision_scenes: int = opt(6000, ge=100, help="scenes the encoder is pretrained on (cached per setting)")
    warmup: int = opt(100, ge=0, help="linear learning-rate warm-up steps (then constant)")
    cache_dir: Path | None = opt(None, help="where the pretrained encoder is cached "
                                 "(default: $XDG_CACHE_HOME/shortcut-audit or ~/.cache/shortcut-audit)")
    scheme: str | None = opt(None, help="`weighted`: recompute weights from an audit's columns with this scheme")
    epochs: int = opt(8, ge=1, help="passes over the data")
    batch_size: int = opt(64, ge=1, help="pairs per step")
    micro_batch: int = opt(0, ge=0, help="pairs per forward/backward on each device; a step accumulates the "
                           "gradients of its micro-batches (the same step as the whole batch at once, in less "
                           "memory); 0 = the whole batch")
    precision: str = opt("auto", choices=("auto", "fp32", "bf16"),
                         help="`--model PATH`: `bf16` runs the forward under bf16 autocast with fp32 master weights "
                         "(AdamW updates are never rounded away); `auto` = bf16 on CUDA, fp32 on CPU")
    grad_checkpointing: bool = opt(False, help="`--model PATH`: recompute activations in the backward pass "
                                   "(gradient checkpointing) so a 2B-8B backbone fits")
    lr: float = opt(2e-3, gt=0, help="AdamW learning rate")
    weight_decay: float = opt(1e-4, ge=0, help="AdamW weight decay")
    dim: int = opt(64, ge=4, help="`small` model width")
    image_size: int = opt(64, ge=16, le=1024, help="`small` model image side")
    vocab: int = opt(4096, ge=16, help="`small` model hashed vocabulary")
    seed: int = opt(0, ge=0, help="seed of initialisation and batch order")
    device: str = opt("auto", help="`small` model: `auto` (CUDA when present, else CPU), `cpu`, `cuda`, `cuda:1`")
    threads: int | None = opt(None, ge=1, help="CPU threads torch uses (results depend on it; default: torch's choice)")

    def __post_init__(self) -> None:
        check_bounds(self)
        self.data, self.out = Path(self.data), Path(self.out)
        _check_device(self.device)
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"`--threads` must be at least 1, got {self.threads}")
        if self.cache_dir is not None:
            self.cache_dir = Path(self.cache_dir)
        if self.vision not in ("pretrained", "scratch"):
            raise ConfigError(f"`--vision` must be `pretrained` or `scratch`, got {self.vision!r}")
        if self.train_vision and self.vision != "pretrained" and self.model == "small":
            raise ConfigError("`--train-vision` only applies to `--vision pretrained` (a `scratch` encoder always trains)")
        if self.vision_scenes < 100 or self.warmup < 0:
            raise ConfigError("`--vision-scenes` must be at least 100 and `--warmup` not negative")
        if self.method not in TRAIN_METHODS:
            raise ConfigError(f"`--method` must be one of {', '.join(TRAIN_METHODS)}, got {self.method!r}")
        if self.trainer not in TRAINERS:
            raise ConfigError(f"`--trainer` must be one of {', '.join(TRAINERS)}, got {self.trainer!r}")
        if self.model != "small" and not Path(self.model).is_dir():
            raise ConfigError(f"`--model {self.model}`: pass `small` or a local folder holding a Qwen2-VL / Qwen2.5-VL "
                              "/ Llava model (saved with `save_pretrained`; nothing is downloaded)")
        if self.scheme is not None and self.method != "weighted":
            raise ConfigError("`--scheme` only applies to `--method weighted`")
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError("`--epochs`, `--batch-size` and `--lr` must be positive")
        if self.image_size % 8:
            raise ConfigError(f"`--image-size` must be a multiple of 8, got {self.image_size}")


EVAL_TABLE_HEADER = "| dataset | split | n | accuracy | cue-aligned | cue-against | text-right | text-wrong | SFD |"
BON_TABLE_HEADER = "# Best-of-N: the gold of each reward model's pick among n candidates (exact over random n-subsets)"


def _check_results_file(out: Path) -> None:
    """`eval -o` writes OUT (JSON) and OUT with `.md` (the table): never onto a folder, a data file or
    another file; each replaces only an earlier eval's."""
    from audit.io import read_json_file, regular_file

    if out.suffix.lower() != ".json":
        raise ConfigError(f"`-o {out}`: eval writes a JSON results file (and a `.md` table beside it); "
                          "pass a path ending in `.json`")
    if out.is_dir():
        raise ConfigError(f"`-o {out}` is a folder; pass a results file path ending in `.json`")
    if out.exists() or out.is_symlink():
        prior = read_json_file(out, limit=64 << 20)
        if not (isinstance(prior, dict) and ("datasets" in prior or "best_of_n" in prior)):
            raise ConfigError(f"`-o {out}` exists and is not an earlier `eval` result; it would be replaced: "
                              "pass another path")
    table = out.with_suffix(".md")
    if table.exists() or table.is_symlink():
        head = None
        if regular_file(table):
            with open(table, encoding="utf-8", errors="replace") as fh:
                head = fh.readline(max(len(EVAL_TABLE_HEADER), len(BON_TABLE_HEADER)) + 2).rstrip("\n")
        if head not in (EVAL_TABLE_HEADER, BON_TABLE_HEADER):
            raise ConfigError(f"`{table}` exists and is not an earlier `eval` table; `eval -o {out}` writes its "
                              "table there and would replace it: pass another path")


@dataclass
class EvalConfig:
    """`shortcut-audit eval`: pairwise accuracy of a trained reward model (or of an external reward model's
    scores) on any number of datasets, split into i.i.d. and o.o.d."""

    run: Path | None = opt(None, positional=True, metavar="RUN_DIR", help="run folder written by `train` (with "
                           "`--scores`: the first dataset; with `--best-of-n`: the first reward model)")
    data: list | None = opt(None, positional=True, metavar="DATA", nargs="*",
                     help="datasets to evaluate on (audit / pairs folders, exports, sources); with `--best-of-n`: more "
                     "reward models (`train` run folders or Hugging Face VLM reward-model folders)")
    out: Path | None = opt(None, short="-o", help="results JSON (a Markdown table is written beside it)")
    scores: str | None = opt(None, metavar="CHOSEN_COL,REJECTED_COL",
                             help="evaluate an external reward model's rewards found in each dataset's columns "
                             "(or one MARGIN_COL) instead of a run; every positional is then a dataset")
    iid: str | None = opt(None, metavar="NAME", help="the dataset that is a held-out split of the training "
                          "distribution (its folder name; `synth --holdout` writes one); the others are o.o.d. The "
                          "run's own training data is never i.i.d.: it is reported as `train`")
    best_of_n: Path | None = opt(None, metavar="CANDIDATES", help="Best-of-N on your own candidate sets: a file or "
                                 "folder (JSONL, JSON, Parquet, HF) with one row per prompt (`prompt`, `image`, "
                                 "`responses`) or one row per response (`response`); optional gold (`gold`, `correct` "
                                 "or `gold_best`). Every positional is then a reward model; the first is the baseline")
    candidate_scores: str | None = opt(None, metavar="COL[,COL...]", help="`--best-of-n`: also rank by these columns "
                                       "of the candidates file: an external reward model's scores (a list per row, or "
                                       "one score per response row)")
    gold: str | None = opt(None, metavar="COL", help="`--best-of-n`: the column holding the gold (numbers, higher is "
                           "better; booleans; or `...best` indices); default: `gold`, `gold_scores`, `correct` or "
                           "`gold_best`, whichever the file has")
    ns: str = opt("1,2,4,8,16,32,64", metavar="N,N,...", help="`--best-of-n`: the numbers of candidates n to report")
    blank: bool = opt(False, help="`--best-of-n`: score every candidate again with a blank white picture and report how "
                      "often the pick stays the same (and, with gold, the gold of the blind pick)")
    export_picks: Path | None = opt(None, metavar="DIR", help="`--best-of-n`: write each scorer's pick among all of a "
                                    "group's candidates to DIR/<scorer>.jsonl (with the picture) for an outside judge")
    image_root: Path | None = opt(None, help="`--best-of-n`: folder that the candidates' image paths resolve inside "
                                  "(default: the folder holding the file); paths that escape it are refused")
    device: str = opt("auto", help="`--best-of-n`: device of the reward models: `auto`, `cpu`, `cuda`, `cuda:1`")

    def __post_init__(self) -> None:
        check_bounds(self)
        self.run = Path(self.run) if self.run is not None else None
        self.data = [Path(d) for d in (self.data if isinstance(self.data, list) else [self.data] if self.data else [])]
        if self.out is not None:
            self.out = Path(self.out)
            _check_results_file(self.out)
        if self.best_of_n is not None:
            self._check_best_of_n()
            return
        if self.candidate_scores or self.gold or self.blank or self.export_picks or self.image_root:
            raise ConfigError("`--candidate-scores`, `--gold`, `--blank`, `--export-picks` and `--image-root` belong "
                              "to `--best-of-n CANDIDATES`")
        if self.scores is not None:
            self.data = ([self.run] if self.run is not None else []) + self.data
            self.run = None
            if not self.data:
                raise ConfigError("`eval --scores` needs at least one dataset")
            return
        if self.run is None or not self.data:
            raise ConfigError("`eval RUN_DIR DATA [DATA ...]`: name a run folder and at least one dataset")
        if not ((self.run / "model.safetensors").is_file() or (self.run / "model" / "config.json").is_file()):
            raise ConfigError(f"`{self.run}` holds no trained model (model.safetensors or model/); train one with "
                              "`shortcut-audit train`, or pass `--scores` to evaluate an external model's scores")

    def _check_best_of_n(self) -> None:
        """`--best-of-n`: every positional is a reward model (kept in `data`, the first is the baseline)."""
        self.best_of_n = Path(self.best_of_n)
        self.data = ([self.run] if self.run is not None else []) + self.data
        self.run = None
        if self.scores is not None or self.iid is not None:
            raise ConfigError("`--scores` and `--iid` are pairwise options; with `--best-of-n` name the score columns "
                              "with `--candidate-scores`")
        if not self.data and not self.score_columns():
            raise ConfigError("`eval --best-of-n CANDIDATES` needs a reward model to rank with: `eval RUN [RUN ...] "
                              "--best-of-n CANDIDATES`, or `--candidate-scores COL` for scores in the file")
        for r in self.data:
            if not ((r / "model.safetensors").is_file() or (r / "model" / "config.json").is_file()
                    or (r / "config.json").is_file()):
                raise ConfigError(f"`{r}` is not a reward model folder (a `train` run, or a Hugging Face VLM reward "
                                  "model saved with `save_pretrained`)")
        if self.blank and not self.data:
            raise ConfigError("`--blank` rescores with a blank picture, which needs a reward model, not score columns")
        self.ns_list()
        _check_device(self.device)
        for name in ("export_picks", "image_root"):
            if getattr(self, name) is not None:
                setattr(self, name, Path(getattr(self, name)))

    def score_columns(self) -> list[str]:
        return [c.strip() for c in (self.candidate_scores or "").split(",") if c.strip()]

    def ns_list(self) -> list[int]:
        """`--ns` as sorted distinct integers of at least 1."""
        try:
            ns = sorted({int(x) for x in str(self.ns).split(",") if x.strip()})
        except ValueError:
            ns = []
        if not ns or ns[0] < 1:
            raise ConfigError(f"`--ns` must be whole numbers of at least 1 separated by commas, got {self.ns!r}")
        return ns


@dataclass
class OverlapConfig:
    """`shortcut-audit overlap`: what two datasets share (say, a training set and an eval set): the same
    or near-identical pictures, the same specific prompts, answers and whole pairs."""

    a: Path = opt(positional=True, metavar="A", help="the first dataset (e.g. the training set): a source or a pairs folder")
    b: Path = opt(positional=True, metavar="B", help="the second dataset (e.g. the eval set): a source or a pairs folder")
    out: Path | None = opt(None, short="-o", help="output folder: overlap.json, overlap.parquet (and with "
                           "`--exclude`, B without its contaminated rows)")
    near_distance: int = opt(32, ge=0, le=128, help="two pictures are near-identical when their 256-bit perceptual "
                             "hashes differ in at most this many bits (see docs/COMMANDS.md, `overlap`)")
    min_chars: int = opt(20, ge=1, help="answers and prompts shorter than this many characters (normalised) are not "
                         "compared on their own (\"Yes.\" is in every dataset)")
    kinds: str = opt("image,near_image,pair,swapped_pair,response", metavar="KIND,...",
                     help="the kinds of match that make a B row contaminated (counted in the summary, removed by "
                     "`--exclude`); all kinds are listed in overlap.parquet either way: image, near_image, pair, "
                     "swapped_pair, response, prompt")
    exclude: bool = opt(False, help="also write B without its contaminated rows (see `--kinds`), in B's own "
                        "format, to OUT/excluded: each kept record as it was read, with its own picture (a VLFeedback "
                        "record with some pairs removed keeps the completions of its other pairs)")
    overwrite: bool = opt(False, help="replace a non-empty `-o` folder that shortcut-audit wrote earlier, whole "
                          "(its earlier contents are deleted once this run finishes; a folder of your own is never deleted)")

    def __post_init__(self) -> None:
        check_bounds(self)
        if self.out is None:
            raise ConfigError("`-o/--out` is required: the folder to write overlap.json and overlap.parquet into")
        self.a, self.b, self.out = Path(self.a), Path(self.b), Path(self.out)
        valid = ("image", "near_image", "pair", "swapped_pair", "response", "prompt")
        names = [k.strip() for k in str(self.kinds).split(",") if k.strip()]
        bad = [k for k in names if k not in valid]
        if bad or not names:
            raise ConfigError(f"`--kinds`: unknown kind(s) {', '.join(bad) or '(none given)'}; valid: {', '.join(valid)}")
        self.kinds = ",".join(names)


@dataclass
class BenchConfig:
    """`shortcut-audit bench`: the cross-distribution experiment on the synthetic environments, with shift
    sets that reverse the training cue, worst-group accuracy, data-matched controls and paired statistics."""

    out: Path = opt(Path("bench-results"), short="-o", help="output folder: results.json, results.md, tasks/, runs/")
    overwrite: bool = opt(False, help="start afresh: replace what an earlier run left in `-o` (without it, a run "
                          "into its own earlier folder resumes or updates it; a folder of your own is never deleted)")
    quick: bool = opt(False, help="a CI-sized run (`leadin`, one seed, small sets): about 2 minutes on 2 cores")
    seeds: int | None = opt(None, ge=1, help="seeds per (environment, method) (default 5; quick 1)")
    n_train: int | None = opt(None, ge=20, help="training pairs per environment (default 4000; quick 1500)")
    n_test: int | None = opt(None, ge=20, help="test pairs per shift set (default 1000; quick 300)")
    epochs: int | None = opt(None, ge=1, help="training epochs (default 12; quick 8)")
    train_envs: str | None = opt(None, help="comma-separated training environments (default: leadin, closing, "
                                 "verbose, markdown at p = 0.9 and 0.7, and clean; quick: leadin)")
    methods: str | None = opt(None, help="comma-separated methods (default all: standard, shortcut-aware, "
                              "weighted-sfc-residual, weighted-debias, weighted-ipw, weighted-jtt, oracle, "
                              "ess-matched, subsample)")
    scale_env: str = opt("leadin", help="environment of the scaling row (trained again at `--scale-n` pairs)")
    scale_n: int | None = opt(None, ge=0, help="training pairs of the scaling row (default 16000; quick: none; 0 = none)")
    jobs: int = opt(1, ge=1, help="training tasks (one environment and seed, all methods) run in parallel processes")
    threads: int = opt(1, ge=1, help="torch CPU threads per training: fixed and recorded, so the same seed gives the "
                       "same numbers; jobs x threads should not exceed the cores")
    device: str = opt("cpu", help="device of the audits and trainings: `cpu` or `cuda` (several `--jobs` share "
                      "one GPU)")
    cache_dir: Path | None = opt(None, help="the pretrained scene encoder and the embedding cache (default OUT/cache); "
                                 "share it across benches to pretrain and encode once")
    worker_audits: bool = opt(False, help="each training task audits its own training set in its worker, with its "
                              "own embedding cache (fast with a GPU; on CPU the main process's shared cache is faster)")
    best_of_n: bool = opt(True, help="also measure Best-of-N: each trained model picks among the candidate responses "
                          "of held-out prompts (right or wrong, the training cue placed by the clean / aligned / neutral "
                          "/ adverse regimes); the gold accuracy of its pick is computed exactly for n = 1 ... 1024, "
                          "with the KL per n; a finished bench gains it from its saved models")
    bon_prompts: int | None = opt(None, ge=10, help="held-out prompts of the Best-of-N experiment (default 500; quick 300)")

    def __post_init__(self) -> None:
        check_bounds(self)
        from audit.bench import METHODS

        self.out = Path(self.out)
        self.cache_dir = Path(self.cache_dir) if self.cache_dir is not None else self.out / "cache"
        q = self.quick
        self.seeds = self.seeds or (1 if q else 5)
        self.n_train = self.n_train or (1500 if q else 4000)
        self.n_test = self.n_test or (300 if q else 1000)
        self.epochs = self.epochs or (8 if q else 12)
        self.bon_prompts = self.bon_prompts or (300 if q else 500)
        if self.scale_n is None:
            self.scale_n = 0 if q else 16000
        if self.train_envs is None:
            self.train_envs = "leadin" if q else ("leadin,closing,verbose,markdown,leadin-0.7,closing-0.7,"
                                                  "verbose-0.7,markdown-0.7,clean")
        if self.methods is None:
            self.methods = ",".join(METHODS)
        check_bounds(self)                       # again, now that the defaults are filled in
        if 0 < self.scale_n < 20:
            raise ConfigError(f"`--scale-n` must be 0 (no scaling row) or at least 20, got {self.scale_n}")
        _check_device(self.device)
        if self.device == "auto":
            raise ConfigError("`bench --device` must be named (`cpu` or `cuda`): the results depend on it")
        bad = [m for m in self.method_list() if m not in METHODS]
        if bad or "standard" not in self.method_list():
            raise ConfigError(f"`--methods` must include `standard` (every difference is taken against it) and name "
                              f"only {', '.join(METHODS)}; got {self.methods!r}")
        from audit.synth import get_env

        for e in [*self.env_list(), self.scale_env]:
            get_env(e)

    def method_list(self) -> list[str]:
        return [m.strip() for m in self.methods.split(",") if m.strip()]

    def env_list(self) -> list[str]:
        return [e.strip() for e in self.train_envs.split(",") if e.strip()]
