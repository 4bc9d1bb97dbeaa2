"""Frozen encoders for the probes: text (any HF / sentence-transformers encoder, offline MiniLM by
default) and image (an offline pixel featuriser by default, any HF vision encoder), plus the on-disk
embedding cache that makes re-scoring with another head, scheme or threshold free."""

from audit.encoders.cache import EmbeddingCache, content_key
from audit.encoders.image import load_image_encoder
from audit.encoders.text import load_text_encoder, resolve_device

__all__ = ["EmbeddingCache", "content_key", "load_image_encoder", "load_text_encoder", "resolve_device"]
