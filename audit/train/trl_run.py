"""`train --trainer trl`: TRL's DPO or reward training on an `export --format trl` folder, with its `weight`
column (`--method weighted`) or without (`standard`: the stock trainer). The model folder decides the
trainer: a sequence-classification model -> RewardTrainer (text only); a vision-language model -> vision
DPO on the export's rows and pictures; a causal LM -> text DPO on the rows' text. Local folders only.

The run folder: `model/` (the trained model and its tokenizer or processor, written whole or not at all),
`checkpoints/` (TRL's own, one per epoch: a rerun into the folder resumes from the last one, with the
optimiser, scheduler and RNG states TRL saves), `cache/` (the `datasets` cache), `metrics.jsonl` (TRL's
log), `train_summary.json`, `config.json`.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from audit.config import TrainConfig, to_dict
from audit.errors import ConfigError, FormatError, SourceError
from audit.io import versions, write_bytes_atomic, write_json_atomic

log = logging.getLogger(__name__)

MODEL, CHECKPOINTS, CACHE = "model", "checkpoints", "cache"
TRL_DATA = ("train-00000-of-00001.parquet", "trl_dataset")   # what `export --format trl` writes


def train_trl(cfg: TrainConfig) -> dict:
    """Claim the run folder (a rerun of the same run resumes), then train with TRL. Under `torchrun` rank 0
    claims it before joining the process group, so the other ranks (blocked in the join) start after it."""
    from audit.dist import setup
    from audit.io import claim_output
    from audit.train.loop import run_identity
    from audit.train.trl_weights import check_trl_version

    check_trl_version()
    _check_options(cfg)
    if _rank() != 0:
        setup()
        return _train_trl(cfg)
    with claim_output(cfg.out, "train", [cfg.data, Path(cfg.model)], overwrite=cfg.overwrite, resumable=True,
                      identity=run_identity(cfg)):
        setup()
        return _train_trl(cfg)


def _check_options(cfg: TrainConfig) -> None:
    if cfg.model == "small":
        raise ConfigError("`--trainer trl` trains a Hugging Face model: pass `--model FOLDER` (a causal LM or vision-"
                          "language model for DPO, a sequence-classification model for reward training)")
    if cfg.method == "shortcut-aware" or cfg.scheme is not None:
        raise ConfigError("`--trainer trl` runs `--method standard` or `weighted` with the export's `weight` column; "
                          "for another scheme re-export with `export --scheme`, for the two-branch loss use the "
                          "built-in trainer")
    if cfg.device.startswith("cuda:"):
        raise ConfigError("`--trainer trl` uses every visible GPU: pick one with CUDA_VISIBLE_DEVICES, not `--device cuda:N`")
    _batching(cfg)
    if cfg.lr == TrainConfig.lr:
        log.warning("`--lr %g` is the built-in small model's default; DPO or reward training of a pretrained model "
                    "usually takes 1e-7 to 1e-5: pass `--lr`", cfg.lr)


def _world() -> int:
    import os

    return int(os.environ.get("WORLD_SIZE", "1"))


def _rank() -> int:
    import os

    return int(os.environ.get("RANK", "0"))


def read_export(path: Path, cache: Path):
    """The TRL rows of an `export --format trl` folder (or its Parquet file / `hf` folder) as a Dataset."""
    import datasets

    path = Path(path)
    found = path if path.suffix == ".parquet" or (path / "dataset_info.json").is_file() else \
        next((path / name for name in TRL_DATA if (path / name).exists()), None)
    if found is None:
        raise SourceError(f"`{path}` holds no `export --format trl` dataset ({' or '.join(TRL_DATA)}); run "
                          "`shortcut-audit export AUDIT -o OUT --format trl` and train on OUT")
    ds = datasets.load_from_disk(str(found)) if found.is_dir() else \
        datasets.Dataset.from_parquet(str(found), cache_dir=str(cache))
    missing = [c for c in ("prompt", "chosen", "rejected") if c not in ds.column_names]
    if missing:
        raise FormatError(f"`{found}` lacks the column(s) {', '.join(f'`{c}`' for c in missing)} of TRL's preference "
                          "format; export it with `--format trl`")
    return ds


def model_kind(folder: Path) -> str:
    """`reward` (a sequence-classification model), `vlm` (a vision config) or `text` (a causal LM)."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError) as e:
        raise SourceError(f"`--model {folder}` is not a model folder transformers can read: {e}") from None
    if any(a.endswith("ForSequenceClassification") for a in config.architectures or []):
        return "reward"
    return "vlm" if getattr(config, "vision_config", None) is not None else "text"


def _text(messages) -> str:
    if isinstance(messages, str):
        return messages
    return "\n\n".join(c["text"] for m in messages for c in (m["content"] if isinstance(m["content"], list) else
                                                            [{"type": "text", "text": m["content"]}])
                       if c.get("type") == "text" and c.get("text"))


def text_rows(ds, chat: bool, cache: Path):
    """The export's rows without pictures: conversational without the image blocks when the tokenizer has a
    chat template, else plain strings (completions after a space: TRL joins prompt and completion). Written
    under `cache` (the run folder's), so TRL's own maps of it write there too, never beside the export."""
    def convert(row):
        if chat:
            return {k: [{"role": m["role"], "content": [c for c in m["content"] if c.get("type") == "text"]}
                        for m in row[k]] for k in ("prompt", "chosen", "rejected")}
        return {"prompt": _text(row["prompt"]), "chosen": " " + _text(row["chosen"]),
                "rejected": " " + _text(row["rejected"])}

    drop = [c for c in ("images", "image") if c in ds.column_names]
    cache.mkdir(parents=True, exist_ok=True)
    return ds.map(convert, remove_columns=drop + (["prompt", "chosen", "rejected"] if not chat else []),
                  desc="text rows", cache_file_name=str(cache / "text_rows.arrow"))


def _batching(cfg: TrainConfig) -> tuple[int, int]:
    """(per-device micro-batch, accumulation steps) making `--batch-size` pairs per optimiser step."""
    world = _world()
    micro = cfg.micro_batch or max(cfg.batch_size // world, 1)
    if cfg.batch_size % (micro * world):
        raise ConfigError(f"`--batch-size {cfg.batch_size}` must be a multiple of `--micro-batch` x processes "
                          f"({micro} x {world}) with `--trainer trl`")
    return micro, cfg.batch_size // (micro * world)


def _trl_args(cfg: TrainConfig, kind: str):
    import torch
    from trl import DPOConfig, RewardConfig

    micro, accumulate = _batching(cfg)
    cuda = torch.cuda.is_available() and cfg.device != "cpu"
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and cuda)
    common = dict(output_dir=str(cfg.out / CHECKPOINTS), num_train_epochs=cfg.epochs, learning_rate=cfg.lr,
                  warmup_steps=cfg.warmup, lr_scheduler_type="constant_with_warmup", weight_decay=cfg.weight_decay,
                  per_device_train_batch_size=micro, gradient_accumulation_steps=accumulate, seed=cfg.seed,
                  data_seed=cfg.seed, bf16=bf16, use_cpu=not cuda, gradient_checkpointing=cfg.grad_checkpointing,
                  save_strategy="epoch", save_total_limit=1, logging_steps=1, report_to="none",
                  dataloader_num_workers=0, disable_tqdm=not log.isEnabledFor(logging.INFO))
    if kind == "reward":
        return RewardConfig(**common)
    return DPOConfig(**common, max_length=None if kind == "vlm" else 1024)


def _load(cfg: TrainConfig, kind: str):
    """(model, reference model or None, tokenizer or processor), from the local folder only."""
    import transformers as tf

    from audit.train.vlm_rm import vision_tower

    folder, local = str(cfg.model), dict(local_files_only=True, trust_remote_code=False)
    if kind == "reward":
        tok = tf.AutoTokenizer.from_pretrained(folder, **local)
        model = tf.AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1, **local)
        if model.config.pad_token_id is None:
            model.config.pad_token_id = tok.pad_token_id
        return model, None, tok
    if kind == "text":
        load, proc = tf.AutoModelForCausalLM, tf.AutoTokenizer.from_pretrained(folder, **local)
    else:
        load, proc = tf.AutoModelForImageTextToText, tf.AutoProcessor.from_pretrained(folder, **local)
        if not getattr(proc, "chat_template", None):
            raise ConfigError(f"the processor in `{folder}` has no chat template, which TRL's vision DPO formats the "
                              "conversation with: set `processor.chat_template` and `save_pretrained` it there")
    model, ref = load.from_pretrained(folder, **local), load.from_pretrained(folder, **local)
    if kind == "vlm" and not cfg.train_vision:            # as the built-in trainer: the vision tower stays frozen
        vision_tower(getattr(model, "model", model)).requires_grad_(False)
    return model, ref, proc


def _trainer(cfg: TrainConfig, kind: str, ds):
    from trl import DPOTrainer, RewardTrainer

    from audit.train.trl_weights import WEIGHT, WeightedDPOTrainer, WeightedRewardTrainer

    model, ref, proc = _load(cfg, kind)
    if kind != "vlm":
        ds = text_rows(ds, chat=bool(getattr(proc, "chat_template", None)), cache=cfg.out / CACHE / f"rank{_rank()}")
    elif not any(c in ds.column_names for c in ("images", "image")):
        raise FormatError(f"`{cfg.data}` has no `images` column for the vision-language model `{cfg.model}`")
    if "margin" in ds.column_names:   # the source's rating margin: TRL's RM would subtract it from the reward gap
        ds = ds.remove_columns("margin")
    weighted = cfg.method == "weighted"
    if weighted and WEIGHT not in ds.column_names:
        raise FormatError(f"`--method weighted` needs a `weight` column in `{cfg.data}`: export with `--mode weight`")
    if not weighted and WEIGHT in ds.column_names:
        ds = ds.remove_columns(WEIGHT)                   # `standard`: the stock trainer, every pair at weight 1
    args = _trl_args(cfg, kind)
    if kind == "reward":
        cls = WeightedRewardTrainer if weighted else RewardTrainer
        return cls(model=model, args=args, train_dataset=ds, processing_class=proc)
    cls = WeightedDPOTrainer if weighted else DPOTrainer
    return cls(model=model, ref_model=ref, args=args, train_dataset=ds, processing_class=proc)


def _train_trl(cfg: TrainConfig) -> dict:
    import json

    import torch
    from transformers.trainer_utils import get_last_checkpoint

    from audit.train.trl_weights import check_trl_version

    t0 = time.perf_counter()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    cfg.out.mkdir(parents=True, exist_ok=True)
    kind = model_kind(Path(cfg.model))
    trainer = _trainer(cfg, kind, read_export(cfg.data, cfg.out / CACHE / f"rank{_rank()}"))
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)             # TRL's log goes to metrics.jsonl, not stdout
    last = get_last_checkpoint(str(cfg.out / CHECKPOINTS)) if (cfg.out / CHECKPOINTS).is_dir() else None
    if last:
        log.info("resuming from %s", last)
    trainer.train(resume_from_checkpoint=last)
    history = [h for h in trainer.state.log_history if "loss" in h]
    summary = {"trainer": "trl", "trl_trainer": type(trainer).__name__, "model_kind": kind, "method": cfg.method,
               "n_pairs": len(trainer.train_dataset), "epochs": cfg.epochs, "resumed_from": last,
               "steps": trainer.state.global_step, "history": history,
               "seconds": round(time.perf_counter() - t0, 2), "config": to_dict(cfg),
               "versions": {**versions(), "trl": check_trl_version()}}
    if trainer.is_world_process_zero():
        _save_folder(trainer, cfg.out / MODEL)
        write_bytes_atomic(cfg.out / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history).encode())
        write_json_atomic(cfg.out / "config.json", to_dict(cfg))
        write_json_atomic(cfg.out / "train_summary.json", summary)
        shutil.rmtree(cfg.out / CACHE, ignore_errors=True)
    return summary


def _save_folder(trainer, folder: Path) -> None:
    """The model and its tokenizer / processor into `folder`, whole or not at all: written beside it, then
    renamed over it (an earlier one is moved aside first and deleted last)."""
    from audit.io import temp_dir_beside

    tmp = temp_dir_beside(folder)
    try:
        trainer.save_model(str(tmp))
        trainer.processing_class.save_pretrained(str(tmp))
        (tmp / "training_args.bin").unlink(missing_ok=True)   # a pickle; the settings are in config.json
        old = folder.with_name(f".{folder.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        if folder.exists():
            folder.rename(old)
        tmp.rename(folder)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
