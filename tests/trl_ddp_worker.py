"""One SGD step of the weighted TRL trainers on 16 weighted pairs, as `torchrun` runs it (tests/test_trl_ddp.py):
`python tests/trl_ddp_worker.py OUT_DIR MICRO_BATCH ACCUMULATE`; rank 0 writes OUT_DIR/{dpo,rm}.safetensors."""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))

N = 16


def one_step(kind: str, out: Path, micro: int, accumulate: int) -> dict:
    import numpy as np
    from datasets import Dataset
    from trl import DPOConfig, RewardConfig

    import trl_fixtures as F
    from audit.train.trl_weights import WeightedDPOTrainer, WeightedRewardTrainer

    w = np.random.default_rng(1).uniform(0.0, 2.0, N)
    ds = Dataset.from_list(F.rows(N, weight=w / w.mean()))
    tok = F.tokenizer()
    common = dict(output_dir=str(out / f"run-{kind}"), bf16=False, use_cpu=True, report_to="none", save_strategy="no",
                  per_device_train_batch_size=micro, gradient_accumulation_steps=accumulate, max_steps=1, optim="sgd",
                  learning_rate=1.0, max_grad_norm=0.0, lr_scheduler_type="constant", seed=0)
    if kind == "rm":
        trainer = WeightedRewardTrainer(model=F.qwen2(tok, reward=True), args=RewardConfig(**common),
                                        train_dataset=ds, processing_class=tok)
    else:
        trainer = WeightedDPOTrainer(model=F.qwen2(tok), ref_model=F.qwen2(tok), args=DPOConfig(**common),
                                     train_dataset=ds, processing_class=tok)
    trainer.train()
    return {n: p.detach().contiguous() for n, p in trainer.accelerator.unwrap_model(trainer.model).named_parameters()}


def main(out: str, micro: str, accumulate: str) -> None:
    from safetensors.torch import save_file

    for kind in ("dpo", "rm"):
        params = one_step(kind, Path(out), int(micro), int(accumulate))
        if int(os.environ.get("RANK", "0")) == 0:
            save_file(params, str(Path(out) / f"{kind}.safetensors"),
                      metadata={"world_size": os.environ.get("WORLD_SIZE", "1")})


if __name__ == "__main__":
    main(*sys.argv[1:])
