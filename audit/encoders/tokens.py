"""Static token embeddings: a text is the mean of its tokens' input embeddings in the text encoder's
own vocabulary (its tokenizer and embedding matrix; no transformer layer runs).

Why it is in the audit: the text-only shortcuts of real preference data are mostly lexical and
stylistic (templates, injected words, list formatting), and a bag of token vectors keeps them, where a
sentence encoder's contextual, length-capped summary washes them out. It is also a few hundred times
cheaper than running the encoder: only the tokenizer runs, so every text is read whole (up to
`MAX_TOKENS`). With the default `minilm` it uses all-MiniLM-L6-v2's vocabulary and input embeddings.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Sequence

import numpy as np

from audit.errors import ConfigError

log = logging.getLogger(__name__)

MAX_TOKENS = 8192          # tokens read per text (real answers are far shorter; bounds a hostile one)
MAX_CHARS = 20 * MAX_TOKENS   # characters handed to the tokenizer per text (bounds its work and memory)
BATCH = 1024               # texts tokenised per call


class TokenEmbedder:
    """`encode(texts) -> (n, d)` float32: the L2-normalised mean of the input embeddings of each
    text's tokens (special tokens left out); an empty text is the zero vector's stand-in, a fixed
    unit vector, so that every row stays finite and non-zero."""

    def __init__(self, name: str = "minilm", trust_remote_code: bool = False) -> None:
        from transformers import AutoModel, AutoTokenizer

        from audit.encoders.text import model_path

        path = model_path(name)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
            model = AutoModel.from_pretrained(path, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot load text encoder `{name}` for its token embeddings ({str(e).splitlines()[0]}); "
                              "pass a local folder or a model id in the local Hugging Face cache") from None
        self.table = model.get_input_embeddings().weight.detach().float().numpy().copy()   # (vocab, d)
        del model
        self.name = name
        h = hashlib.blake2b(digest_size=8)
        h.update(f"tokens-v1|{name}|{MAX_TOKENS}|{MAX_CHARS}|{self.table.shape}".encode())
        h.update(self.table.tobytes())
        h.update(repr(sorted(self.tokenizer.get_vocab().items())).encode())   # ids -> rows of the table
        self.fingerprint = "tokens-" + h.hexdigest()
        self.pooling = "mean of input token embeddings"
        fallback = np.ones(self.dim, dtype=np.float32)
        self._empty = fallback / np.linalg.norm(fallback)

    @property
    def dim(self) -> int:
        return int(self.table.shape[1])

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        import scipy.sparse as sp

        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for s in range(0, len(texts), BATCH):
            chunk = [t[:MAX_CHARS] if isinstance(t, str) else "" for t in texts[s:s + BATCH]]
            ids = self.tokenizer(chunk, add_special_tokens=False, truncation=True, max_length=MAX_TOKENS)["input_ids"]
            lengths = np.fromiter((len(i) for i in ids), dtype=np.int64, count=len(ids))
            cols = np.fromiter((t for i in ids for t in i), dtype=np.int64, count=int(lengths.sum()))
            rows = np.repeat(np.arange(len(ids)), lengths)
            bag = sp.csr_matrix((np.ones(len(cols), dtype=np.float32), (rows, cols)),
                                shape=(len(ids), self.table.shape[0]))
            vec = np.asarray(bag @ self.table, dtype=np.float32)
            norm = np.linalg.norm(vec, axis=1, keepdims=True)
            empty = norm[:, 0] == 0
            vec[~empty] /= norm[~empty]
            vec[empty] = self._empty
            out[s:s + len(ids)] = vec
        return out
