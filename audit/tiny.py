"""Tiny randomly initialised vision-language reward models (Qwen2-VL and Llava), built from configs and
saved to a folder with a tokenizer, an image processor and a reward head, exactly as a user's model
folder looks. For tests, benchmarks and GPU checks: nothing is downloaded and nothing but torch and
transformers is needed (the tokenizer is a word-level one built here, with the family's special
tokens; the chat template is the family's own shape, written by hand)."""

from __future__ import annotations

from pathlib import Path

QWEN_SPECIAL = ["<|image_pad|>", "<|vision_start|>", "<|vision_end|>", "<|im_start|>", "<|im_end|>"]
QWEN_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ c['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endfor %}")


WORDS = ("a an the is are of in on at to and or with what which where how many colour color shape "
         "red green blue yellow purple orange black white grey square circle triangle star object objects "
         "image picture shows there one two three four left right top bottom corner centre center it this "
         "that answer sure certainly here i see looking carefully".split())


def _tokenizer(special):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]"] + sorted(set(WORDS)) + list("0123456789.,?!:;'\"-"))}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.normalizer = normalizers.Lowercase()
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(), pre_tokenizers.Digits(individual_digits=True)])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token="[PAD]")
    tok.add_special_tokens({"additional_special_tokens": special})
    return tok


def _save(model, tok, processor, out: Path, head_seed: int, text_only_head: bool = False) -> Path:
    import torch

    from audit.vlm import save_head

    out = Path(out)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    processor.save_pretrained(out)
    g = torch.Generator().manual_seed(head_seed)
    hidden = model.config.get_text_config().hidden_size
    save_head(out, torch.randn(1, hidden, generator=g), torch.zeros(1))
    return out


def tiny_qwen2_vl(out: Path, seed: int = 0, chat_template: bool = True) -> Path:
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration
    try:
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
    except ImportError:   # transformers before the PIL backends had their own classes
        from transformers import Qwen2VLImageProcessor as Qwen2VLImageProcessorPil

    tok = _tokenizer(QWEN_SPECIAL)
    if chat_template:
        tok.chat_template = QWEN_TEMPLATE
    torch.manual_seed(seed)
    cfg = Qwen2VLConfig(
        text_config=dict(vocab_size=len(tok), bos_token_id=None, eos_token_id=None, pad_token_id=tok.pad_token_id,
                         hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=1, intermediate_size=48,
                         rope_scaling={"type": "mrope", "mrope_section": [4, 2, 2]}),
        vision_config=dict(depth=1, embed_dim=32, hidden_size=32, num_heads=2, mlp_ratio=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2),
        image_token_id=tok.convert_tokens_to_ids("<|image_pad|>"),
        vision_start_token_id=tok.convert_tokens_to_ids("<|vision_start|>"))
    model = Qwen2VLForConditionalGeneration(cfg)
    proc = Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=112 * 112)
    return _save(model, tok, proc, out, seed)


def tiny_llava(out: Path, seed: int = 0) -> Path:
    import torch
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration, Qwen2Config
    try:
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    except ImportError:
        from transformers import CLIPImageProcessor as CLIPImageProcessorPil

    tok = _tokenizer(["<image>"])
    torch.manual_seed(seed)
    cfg = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                       num_attention_heads=2, image_size=56, patch_size=14).to_dict(),
        text_config=Qwen2Config(vocab_size=len(tok), bos_token_id=None, eos_token_id=None,
                                pad_token_id=tok.pad_token_id, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                num_key_value_heads=1, intermediate_size=48).to_dict(),
        image_token_id=tok.convert_tokens_to_ids("<image>"), vision_feature_layer=-1)
    model = LlavaForConditionalGeneration(cfg)
    proc = CLIPImageProcessorPil(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56})
    return _save(model, tok, proc, out, seed)


def tiny_text_rm(out: Path, seed: int = 0) -> Path:
    """A tiny decoder text model folder (GPT-BigCode: its tokenizer loads as the word-level one saved
    here, where a Qwen2 folder would make AutoTokenizer rebuild Qwen2's BPE) for the fine-tuned probe."""
    import torch
    from transformers import GPTBigCodeConfig, GPTBigCodeForSequenceClassification

    tok = _tokenizer([])
    torch.manual_seed(seed)
    cfg = GPTBigCodeConfig(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=2, n_positions=512, num_labels=1,
                           pad_token_id=tok.pad_token_id, bos_token_id=None, eos_token_id=None)
    GPTBigCodeForSequenceClassification(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return Path(out)
