"""The reference training loop, top to bottom: config, data, model(s), optimiser, `for epoch`,
checkpoint. Three methods:

- `standard`: mean Bradley-Terry loss;
- `weighted`: per-pair weights (the audit's `weight`, mean 1), sum(w_i L_i) / B;
- `shortcut-aware`: the paper's dynamic loss. A second, text-only reward model of the same shape sees
  a blank white image and trains jointly on its own unweighted loss; the multimodal loss of each pair
  is weighted by w = eps/2 + L_t / (eps + L_t + L) (detached). Only the multimodal model is saved for
  inference.

Checkpoints are safetensors with the config inside; the run resumes from its last epoch.

Data-parallel: under `torchrun --nproc_per_node N` every rank takes every N-th pair of each global
batch, the loss is sum(per-pair terms) / global batch size, and gradients are summed across ranks
(gloo on CPU, NCCL on GPUs), so N processes take exactly the step one process takes on the whole
global batch. Rank 0 writes the outputs.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from audit.config import TrainConfig, to_dict
from audit.errors import FormatError
from audit.io import versions, write_bytes_atomic, write_json_atomic
from audit.train.data import PairData, data_fingerprint, load_pairs
from audit.train.losses import bt_loss, shortcut_aware_loss, weighted_bt_loss
from audit.train.models import blank_image, build_model
from audit.train.setup import build_models, frozen_vision, make_optimizer, resume, save_state, train_device

log = logging.getLogger(__name__)

CHECKPOINT = "model.safetensors"          # the multimodal RM: what inference loads
BIAS_CHECKPOINT = "bias_model.safetensors"  # shortcut-aware: the text-only branch (for resuming only)
STATE = "trainer_state.pt"
HF_CHECKPOINT = "model"                    # `--model PATH`: the backbone + reward head, save_pretrained
HF_BIAS_CHECKPOINT = "bias_model"


def save_model(model, path: Path) -> None:
    if getattr(model, "config", {}).get("kind") == "hf":     # a VLM backbone: a folder `score --rm` loads
        model.save(path)
        return
    from safetensors.torch import save_file

    from audit.io import atomic_path

    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp),
                  metadata={"config": json.dumps(model.config)})


def checkpoint(run: Path) -> Path:
    """The multimodal model of a run folder: `model.safetensors` (small) or `model/` (a VLM backbone)."""
    run = Path(run)
    summary = run / "train_summary.json"
    if summary.is_file() and '"trainer": "trl"' in summary.read_text(encoding="utf-8", errors="replace"):
        raise FormatError(f"`{run}` was trained with `--trainer trl`: its `model/` is a TRL policy or reward model, "
                          "not this package's reward model, so `eval` cannot score it; load it with transformers")
    return run / HF_CHECKPOINT if (run / HF_CHECKPOINT).is_dir() else run / CHECKPOINT


def load_model(path: Path):
    path = Path(path)
    if path.is_dir():
        from audit.train.vlm_rm import VLMTrainRM

        return VLMTrainRM(path).eval()
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as f:
        config = json.loads(f.metadata()["config"])
    model = build_model(config)
    model.load_state_dict(load_file(str(path)))
    return model.eval()


def _images(data: PairData, idx: torch.Tensor) -> torch.Tensor:
    return data.images[idx].float() / 255.0


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def vision_fingerprint(model) -> str:
    """Hash of the `small` model's scene-encoder weights: cached image features are reused only by a
    model whose encoder is the one that computed them."""
    import hashlib

    h = hashlib.sha256()
    for k, v in sorted(model.vision.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


@torch.no_grad()
def vision_features(model, data: PairData, chunk: int = 512) -> torch.Tensor:
    """The scene encoder's features (N, 4, 64) of every image in `data`, on the model's device,
    computed once per (encoder weights, device) and kept on `data`. Only valid where the encoder does
    not train (frozen, or at evaluation): then each step runs the slots and the text side alone, and the
    values equal those of `encode_image` on the raw images."""
    dev = model_device(model)
    key = (vision_fingerprint(model), str(dev))
    if key not in data.features:
        out = [model.vision(_images(data, torch.arange(s, min(s + chunk, len(data)))).to(dev))
               for s in range(0, len(data), chunk)]
        data.features.clear()                  # one encoder's features at a time
        data.features[key] = torch.cat(out) if out else torch.zeros(0, 4, 64, device=dev)
    return data.features[key]


def rewards(model, data: PairData, idx: torch.Tensor, blank: bool = False,
            feats: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(r_chosen, r_rejected) for the pairs `idx`; `blank` feeds the white image instead of the real one;
    `feats` are the frozen scene encoder's features of all of `data` (`vision_features`)."""
    if hasattr(model, "pair_rewards"):                            # a VLM backbone: images at their own size
        from audit.vlm import blank_image as white

        rows = idx.tolist()
        texts = [data.table[c].gather(rows).to_list() for c in ("prompt", "chosen", "rejected")]
        images = [white() for _ in rows] if blank else data.native_images(rows)
        return model.pair_rewards(*texts, images)
    dev = model_device(model)
    if blank:   # every pair gets the same white picture: encode it once (same values and gradients)
        v = model.encode_image(blank_image(1, data.images.shape[-1]).to(dev)).expand(len(idx), -1, -1)
    elif feats is not None:
        v = model.slots(feats[idx.to(feats.device)])
    else:
        v = model.encode_image(_images(data, idx).to(dev))        # one image pass for both responses
    p, c, r = (t[idx].to(dev) for t in (data.prompt, data.chosen, data.rejected))
    return model.score(v, p, c), model.score(v, p, r)


@torch.no_grad()
def margins(model, data: PairData, batch: int = 512) -> np.ndarray:
    if hasattr(model, "pair_rewards"):      # a VLM: 2 sequences of hundreds of tokens per pair
        batch = min(batch, 16)
    model.eval()
    feats = None if hasattr(model, "pair_rewards") else vision_features(model, data)
    out = []
    for s in range(0, len(data), batch):
        idx = torch.arange(s, min(s + batch, len(data)))
        rc, rr = rewards(model, data, idx, feats=feats)
        out.append((rc - rr).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def distributed() -> tuple[int, int]:
    from audit.dist import setup

    return setup()


def _all_sum(t: torch.Tensor, world: int) -> torch.Tensor:
    if world > 1:
        import torch.distributed as dist

        if dist.get_backend() == "nccl" and not t.is_cuda:   # NCCL reduces GPU tensors only
            t.copy_(_all_sum(t.cuda(), world).cpu())
            return t
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def train_weights(cfg: TrainConfig, data: PairData, override: np.ndarray | None = None) -> torch.Tensor | None:
    if cfg.method != "weighted":
        return None
    if override is not None:
        return torch.tensor(override, dtype=torch.float32)
    if cfg.scheme is not None:
        from audit.schemes import check_scheme, sfc_kind_of, weights

        t = data.table
        if "text_prob" not in t.columns:
            raise FormatError("`--scheme` needs an audit folder (text_prob, sfc columns); pass `score`'s output")
        summary = Path(cfg.data) / "summary.json"
        check_scheme(cfg.scheme, sfc_kind_of(json.loads(summary.read_text()) if summary.is_file() else {}))
        w = weights(cfg.scheme, np.ones(len(data), bool), text_prob=t["text_prob"].to_numpy(), sfc=t["sfc"].to_numpy())
        return torch.tensor(w, dtype=torch.float32)
    if data.weight is None:
        raise FormatError(f"`--method weighted` needs a `weight` column in `{cfg.data}`: train on an audit folder "
                          "or a `weight` export, or pass `--scheme`")
    return data.weight


def loss_terms(method: str, model, bias, data: PairData, idx: torch.Tensor, weight: torch.Tensor | None,
               feats: torch.Tensor | None = None):
    """Per-pair loss terms of one (share of a) batch: (terms, weights w, r_chosen, r_rejected);
    `feats`: the frozen scene encoder's features of `data` (see `vision_features`)."""
    rc, rr = rewards(model, data, idx, feats=feats)                 # (b,), (b,)
    if method == "standard":
        return bt_loss(rc, rr), torch.ones(len(idx), device=rc.device), rc, rr
    if method == "weighted":
        w = weight[idx].to(rc.device)
        return weighted_bt_loss(rc, rr, w, reduction="none"), w, rc, rr
    bc, br = rewards(bias, data, idx, blank=True)                   # text-only branch: white image
    per_pair, w = shortcut_aware_loss(rc, rr, bc, br, reduction="none")
    return per_pair, w, rc, rr


# Where a run's files lie and how fast it ran, not what it trains: a resume may change these. `epochs`
# may grow (a run stopped early continues to the new count; batch order and warm-up follow the epoch).
_NOT_THE_RUN = ("out", "overwrite", "cache_dir", "device", "threads", "data", "epochs")


def run_identity(cfg: TrainConfig, weights: np.ndarray | None = None) -> dict:
    """What makes two `train` runs one run (a rerun into its folder resumes only that one): every setting
    that shapes the model, the data's content (not its path) and any weights given directly."""
    import hashlib

    ident = {k: v for k, v in to_dict(cfg).items() if k not in _NOT_THE_RUN}
    ident["data"] = data_fingerprint(cfg.data)
    if weights is not None:
        ident["weights"] = hashlib.sha256(np.ascontiguousarray(weights, dtype=np.float64).tobytes()).hexdigest()[:16]
    return json.loads(json.dumps(ident, default=str))      # as the marker stores it


def train(cfg: TrainConfig, weights: np.ndarray | None = None, pairs: PairData | None = None) -> dict:
    """Train; `weights` (Python API only) gives `weighted` per-pair weights directly, in data order
    (the benchmark's oracle and its controls use it); `pairs`: `cfg.data` already loaded (the benchmark
    trains several methods on one set). Rank 0 owns the run folder (`claim_output`) before the process
    group starts, so the other ranks write into it only once it is ready."""
    import os

    from audit.io import claim_output

    if int(os.environ.get("RANK", "0")) != 0:
        return _train(cfg, weights, pairs)
    with claim_output(cfg.out, "train", [cfg.data], overwrite=cfg.overwrite, resumable=True,
                      identity=run_identity(cfg, weights)):
        return _train(cfg, weights, pairs)


def _train(cfg: TrainConfig, weights: np.ndarray | None, pairs: PairData | None) -> dict:
    t0 = time.perf_counter()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)        # results depend on it: fixed and recorded
    rank, world = distributed()
    cfg.out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)                   # same initial weights on every rank
    data = pairs if pairs is not None else load_pairs(cfg.data, cfg.image_size, cfg.vocab,
                                                      workdir=cfg.out / f"rank{rank}" if world > 1 else cfg.out)
    weight = train_weights(cfg, data, weights)
    device = train_device(cfg)
    model, bias, vision_report = build_models(cfg, device)
    if weight is not None:
        weight = weight.to(device)
    opt, params = make_optimizer(cfg, model, bias, device)
    feats = vision_features(model, data) if frozen_vision(cfg, model) else None
    start_epoch, history = resume(cfg.out / STATE, model, bias, opt, cfg.epochs)
    if rank == 0:                                 # the log says what the state says, nothing more
        write_bytes_atomic(cfg.out / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history).encode())

    n = len(data)
    truth = None if data.cue_on_chosen is None else torch.tensor(
        [bool(x) if x is not None else False for x in data.cue_on_chosen])
    for epoch in range(start_epoch, cfg.epochs):
        t_epoch = time.perf_counter()
        totals = _epoch(cfg, epoch, model, bias, opt, params, data, weight, feats, truth, rank, world)
        epoch_s = time.perf_counter() - t_epoch
        tot_loss, tot_w, tot_w2, cue_w, right = _all_sum(torch.tensor(totals, dtype=torch.float64), world).tolist()
        # train_acc: on each batch before its update (free; the final model's accuracy is `eval`'s job).
        # ess: effective sample size of this epoch's pair weights, (sum w)^2 / sum w^2, as a share of n.
        entry = {"epoch": epoch + 1, "loss": tot_loss / n, "mean_weight": tot_w / n, "train_acc": right / n,
                 "ess": (tot_w * tot_w / tot_w2 / n) if tot_w2 > 0 else 0.0, "seconds": round(epoch_s, 3)}
        if truth is not None and any(x is not None for x in data.cue_on_chosen):
            entry["cue_share"] = cue_w / max(tot_w, 1e-12)       # share of effective weight on cue-aligned pairs
        history.append(entry)
        if rank == 0:
            with open(cfg.out / "metrics.jsonl", "a", encoding="utf-8") as fh:
                fh.write(json.dumps(entry) + "\n")
            log.info("epoch %d: %s", epoch + 1, entry)
            save_state(cfg.out / STATE, model, bias, opt, epoch + 1, history)

    summary = {"method": cfg.method, "n_pairs": n, "vision": vision_report, "epochs": cfg.epochs,
               "epochs_run": cfg.epochs - start_epoch, "world_size": world,
               "history": history, "seconds": round(time.perf_counter() - t0, 2),
               # every epoch's training time, the epochs of an interrupted earlier run included
               "train_seconds": round(sum(h.get("seconds", 0.0) for h in history), 3),
               "device": str(device), "threads": torch.get_num_threads(),
               "config": to_dict(cfg), "versions": versions()}
    if rank == 0:
        hf = cfg.model != "small"
        save_model(model, cfg.out / (HF_CHECKPOINT if hf else CHECKPOINT))
        if bias is not None:
            save_model(bias, cfg.out / (HF_BIAS_CHECKPOINT if hf else BIAS_CHECKPOINT))
        write_json_atomic(cfg.out / "config.json", to_dict(cfg))
        write_json_atomic(cfg.out / "train_summary.json", summary)
    return summary


def _epoch(cfg: TrainConfig, epoch: int, model, bias, opt, params, data: PairData, weight, feats, truth,
           rank: int, world: int) -> list[float]:
    """One epoch of steps; returns this rank's sums of (loss, w, w^2, cue-aligned w, right)."""
    model.train()
    if bias is not None:
        bias.train()
    n = len(data)
    steps_per_epoch = -(-n // cfg.batch_size)
    g = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)   # batch order: a function of (seed, epoch)
    perm = torch.randperm(n, generator=g)
    totals = [0.0] * 5
    for j, s in enumerate(range(0, n, cfg.batch_size)):
        step = epoch * steps_per_epoch + j                      # warm-up from the global step: resume-exact
        for group in opt.param_groups:
            group["lr"] = cfg.lr * min(1.0, (step + 1) / cfg.warmup) if cfg.warmup else cfg.lr
        batch = perm[s:s + cfg.batch_size]                      # the global batch, same on every rank
        share = batch[rank::world]                              # this rank's share of it
        opt.zero_grad(set_to_none=False)
        micro = cfg.micro_batch or max(len(share), 1)           # micro-batches accumulate into one step
        for m0 in range(0, len(share), micro) if len(share) else [0]:
            idx = share[m0:m0 + micro]
            per_pair, w, rc, rr = loss_terms(cfg.method, model, bias, data, idx, weight, feats=feats)
            (per_pair.sum() / len(batch)).backward()            # summed: the mean over the global batch
            # one host transfer per micro-batch: loss, sum w, sum w^2, cue-aligned w, right
            w = w.detach().float()
            cue = truth[idx].to(w.device) if truth is not None else torch.zeros_like(w)
            stats = torch.stack([per_pair.detach().sum().float(), w.sum(), (w * w).sum(), (w * cue).sum(),
                                 ((rc - rr).detach() > 0).float().sum()]).cpu().tolist()
            totals = [a + b for a, b in zip(totals, stats)]
        if world > 1:
            for prm in params:                                  # sum of shares = the global gradient
                if prm.grad is None:
                    prm.grad = torch.zeros_like(prm)
                _all_sum(prm.grad, world)
        opt.step()
    return totals
