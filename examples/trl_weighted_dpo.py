"""Vision DPO in your own TRL script, with the audit's per-pair weights.

    shortcut-audit export AUDIT_DIR -o EXPORT --format trl          # rows + images + `weight` (mean 1)
    python examples/trl_weighted_dpo.py EXPORT MODEL_FOLDER RUN_DIR

MODEL_FOLDER: a vision-language model saved with `save_pretrained` (its processor with a chat template).
`WeightedDPOTrainer` is TRL's DPOTrainer plus the `weight` column: each pair's DPO loss is multiplied by its
weight (mean over the micro-batch, as TRL averages). For a text model pass its tokenizer instead of the
processor; for a reward model use `WeightedRewardTrainer` with `RewardConfig`. Needs `pip install
'shortcut-audit[trl]'`.
"""

import sys

import torch
from datasets import load_dataset
from transformers import AutoModelForImageTextToText, AutoProcessor
from trl import DPOConfig

from audit.train.trl_weights import WeightedDPOTrainer

export, folder, run = sys.argv[1:4]
dataset = load_dataset("parquet", data_files=f"{export}/train-00000-of-00001.parquet", split="train")
model = AutoModelForImageTextToText.from_pretrained(folder)
ref_model = AutoModelForImageTextToText.from_pretrained(folder)      # the frozen reference policy
trainer = WeightedDPOTrainer(model=model, ref_model=ref_model, train_dataset=dataset,
                             processing_class=AutoProcessor.from_pretrained(folder),
                             args=DPOConfig(output_dir=run, max_length=None, num_train_epochs=1,
                                            per_device_train_batch_size=4, learning_rate=1e-6,
                                            bf16=torch.cuda.is_available(), use_cpu=not torch.cuda.is_available()))
trainer.train()
trainer.save_model(run)
