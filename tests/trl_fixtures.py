"""Tiny TRL fixtures shared by tests/test_trl.py, tests/test_trl_ddp.py and benchmarks/trl_bench.py: a word-level
tokenizer, Qwen2 causal / sequence-classification models and a Llava processor built from configs, random
preference rows. Nothing is downloaded."""

from __future__ import annotations

import random

LLAVA_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}:{% if m['content'] is string %} {{ m['content'] }}{% else %}"
    "{% for c in m['content'] %}{% if c['type'] == 'image' %} <image>{% else %} {{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}")


def tokenizer():
    from audit.tiny import _tokenizer

    tok = _tokenizer(["<image>", "<eos>"])
    tok.eos_token = "<eos>"
    return tok


def qwen2(tok, seed: int = 0, reward: bool = False):
    """A 2-layer Qwen2 (hidden 16): causal LM for DPO, or a 1-label sequence classifier for the RM."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen2ForSequenceClassification

    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, pad_token_id=tok.pad_token_id,
                      bos_token_id=None, eos_token_id=tok.eos_token_id, num_labels=1, tie_word_embeddings=False)
    return (Qwen2ForSequenceClassification if reward else Qwen2ForCausalLM)(cfg).eval()


def rows(n: int = 16, seed: int = 0, weight=None) -> list[dict]:
    """n random text pairs (prompt, chosen, rejected; chosen and rejected differ)."""
    from audit.tiny import WORDS

    rnd = random.Random(seed)
    out = []
    for i in range(n):
        words = lambda k: " ".join(rnd.choice(WORDS) for _ in range(k))  # noqa: E731
        # completions start with a space: TRL joins prompt + completion as strings
        row = {"prompt": words(rnd.randint(3, 6)), "chosen": " " + words(rnd.randint(2, 5)),
               "rejected": " " + words(rnd.randint(2, 5))}
        if weight is not None:
            row["weight"] = float(weight[i])
        out.append(row)
    return out


def llava(folder, seed: int = 0):
    """(model, processor) of a tiny Llava (CLIP 56 px, patch 14, Qwen2 text) saved in `folder` and loaded back."""
    import torch
    from transformers import AutoImageProcessor, AutoProcessor, LlavaForConditionalGeneration, LlavaProcessor

    from audit.tiny import tiny_llava

    tiny_llava(folder, seed=seed)
    tok = tokenizer()                              # tiny_llava's tokenizer plus an `<eos>` token
    model = LlavaForConditionalGeneration.from_pretrained(folder)
    torch.manual_seed(seed)
    model.resize_token_embeddings(len(tok))
    model.config.text_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(folder)
    LlavaProcessor(image_processor=AutoImageProcessor.from_pretrained(folder), tokenizer=tok,
                   chat_template=LLAVA_TEMPLATE, patch_size=14, vision_feature_select_strategy="default",
                   num_additional_image_tokens=1).save_pretrained(folder)
    return LlavaForConditionalGeneration.from_pretrained(folder).eval(), AutoProcessor.from_pretrained(folder)


def vision_rows(n: int = 16, seed: int = 0, weight=None) -> list[dict]:
    """n rows in `export --format trl`'s shape: a user turn with an image block, 56x56 pictures."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for r in rows(n, seed, weight):
        img = Image.fromarray(rng.integers(0, 256, (56, 56, 3), dtype=np.uint8))
        row = {"prompt": [{"role": "user", "content": [{"type": "image", "text": None},
                                                       {"type": "text", "text": r["prompt"]}]}],
               "chosen": [{"role": "assistant", "content": [{"type": "text", "text": r["chosen"].strip()}]}],
               "rejected": [{"role": "assistant", "content": [{"type": "text", "text": r["rejected"].strip()}]}],
               "images": [img]}
        if "weight" in r:
            row["weight"] = r["weight"]
        out.append(row)
    return out
