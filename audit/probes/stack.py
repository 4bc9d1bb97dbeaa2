"""The text-only shortcut model: components, each cross-fitted with exact nesting, and (by default) a
stack of them.

A component is one text-only model family: `tokens` (ridge head on static token embeddings of the
text encoder's vocabulary), `embedding` (ridge head on the text encoder's sentence embeddings),
`lexical` (naive-Bayes log-odds of one-sided n-grams), `cue` (ridge head on the hand-written cue
features) and `finetune` (a text reward model fine-tuned per fold). Each gives out-of-fold margins,
nested margins (`audit.bt.CrossFit`) and, where it can, prompt-blind margins.

The stack (`--text-probe stack`, the default) combines the components' margins with a small
Bradley-Terry logistic model with non-negative weights, fitted with nested cross-fitting: for outer fold f it is fitted on the
nested margins of the other folds (from component models that never saw f) and applied to fold f's
out-of-fold margins. Its nested margins (the same model on the other folds) are the multimodal probe's
offset and what calibrates fold f. So no pair's text_prob ever saw that pair's label through any layer:
swapping chosen and rejected in one fold negates exactly that fold's margins (tests/test_stack.py).

Which components (`--stack`): `auto` is tokens, lexical and cue, plus the text encoder itself
(`embedding`) when it is cheap enough: on a GPU, on CPU up to `AUTO_EMBEDDING_PAIRS` scored pairs, or
when `--text-encoder` names another model. Every component's own accuracy is reported (which model
family carries the shortcut is information too). `--text-probe tokens|embedding|lexical|finetune`
uses that component alone.
"""

from __future__ import annotations

import numpy as np

from audit import metrics
from audit.bt import CrossFit, fold_index, ridge_cross_fit
from audit.config import TEXT_COMPONENTS as COMPONENTS  # noqa: F401 (the names live beside the config)
from audit.probes.base import Probe, ProbeResult, register

AUTO = ("tokens", "lexical", "cue")
AUTO_EMBEDDING_PAIRS = 2_000      # CPU: above this many scored pairs `auto` leaves the text encoder out
NEEDS = {"tokens": {"tokens"}, "embedding": {"text"}}
STACK_L2 = 1e-3                   # the stacker's ridge on standardised component margins


def resolve_components(cfg, ctx=None) -> list[str]:
    """The components `--text-probe` / `--stack` ask for on this data and device."""
    if cfg.text_probe != "stack":
        return [cfg.text_probe]
    if cfg.stack != "auto":
        return [c.strip() for c in cfg.stack.split(",") if c.strip()]
    big = ctx is not None and ctx.m > AUTO_EMBEDDING_PAIRS and not str(ctx.device).startswith("cuda")
    return list(AUTO) + ([] if big and cfg.text_encoder == "minilm" else ["embedding"])


def text_inputs(cfg, ctx=None) -> set[str]:
    """The cached inputs the text side reads (the multimodal probe reuses its embeddings)."""
    return set().union(*(NEEDS.get(c, set()) for c in resolve_components(cfg, ctx)))


def _embedding(kind: str):
    def build(probe, ctx, fitted) -> CrossFit:
        from audit.probes.text_embedding import text_features

        enc, emb = ctx.inputs[kind]
        rows = lambda idx: text_features(*emb.take(idx)).linear   # noqa: E731  [e_c - e_r, (e_c - e_r) * e_p]
        return ridge_cross_fit(rows, ctx.m, ctx.folds, blind_dims=enc.dim)
    return build


def _lexical(probe, ctx, fitted) -> CrossFit:
    from audit.probes.lexical import lexical_cross_fit

    return lexical_cross_fit(ctx)


def _cue(probe, ctx, fitted) -> CrossFit:
    """Ridge head on the standardised cue differences; prompt-blind without the one cue that reads the prompt."""
    from audit.probes.cues import CUE_FUNCS

    names = list(CUE_FUNCS)
    order = [j for j, n in enumerate(names) if n != "prompt_overlap"] + [names.index("prompt_overlap")]
    x = ctx.cue_diff[:, order]
    x = (x / (rms(x) + 1e-9)).astype(np.float32)
    return ridge_cross_fit(lambda idx: x[idx], ctx.m, ctx.folds, blind_dims=len(order) - 1)


def rms(a: np.ndarray) -> np.ndarray:
    """Root mean square per column: the scale of chosen-minus-rejected values. Unlike the standard
    deviation it does not change when pairs are swapped (their values change sign), so scaling by it
    reads no label."""
    return np.sqrt(np.mean(np.square(a), axis=0))


def _finetune(probe, ctx, fitted) -> CrossFit:
    return probe.finetuned


BUILD = {"tokens": _embedding("tokens"), "embedding": _embedding("text"), "lexical": _lexical, "cue": _cue,
         "finetune": _finetune}


def stack(parts: dict[str, CrossFit], folds: np.ndarray, l2: float = STACK_L2) -> tuple[CrossFit, list[np.ndarray]]:
    """Nested stacking (module docstring). Each component's margins are scaled (root mean square) within
    the rows they score (the nested margins of the other folds for fitting, fold f's out-of-fold margins for
    applying: heads fitted on fewer folds give smaller margins, and this puts both on one scale; no
    label is read). Returns the stacked CrossFit and each outer fold's weights. The prompt-blind stack
    is the same stacking of the components' prompt-blind models (those that have one), with its own
    weights: it never reads a prompt."""
    f, k = fold_index(folds)
    names = list(parts)
    unit = lambda a: a / (rms(a) + 1e-12)   # noqa: E731
    m = len(f)
    margin, nested = np.zeros(m), np.full((k, m), np.nan)
    weights = []
    for o in range(k):
        tr = f != o
        z = unit(np.stack([parts[n].nested[o, tr] for n in names], axis=1))
        w = nonnegative_bt(z, l2)
        weights.append(w)
        margin[~tr] = unit(np.stack([parts[n].margin[~tr] for n in names], axis=1)) @ w
        nested[o, tr] = z @ w
    blind = {n: parts[n].blind for n in names if parts[n].blind is not None}
    return CrossFit(margin, nested, stack(blind, folds, l2)[0] if blind else None), weights


def nonnegative_bt(z: np.ndarray, l2: float) -> np.ndarray:
    """argmin over w >= 0 of mean softplus(-z w) + l2 |w|^2 (L-BFGS-B). Non-negative, as in Breiman's
    stacked regressions: out-of-fold margins of a component with no signal lean slightly against the
    labels (each fold's model learnt the other folds' imbalance), and a free stacker would flip them
    into an accuracy above chance on data with no shortcut at all."""
    from scipy.optimize import minimize

    def loss_grad(w):
        m = z @ w
        s = np.exp(-np.logaddexp(0.0, m))        # sigmoid(-m)
        return float(np.logaddexp(0.0, -m).mean() + l2 * (w @ w)), -(z.T @ s) / len(m) + 2.0 * l2 * w

    w0 = np.full(z.shape[1], 0.1)
    return minimize(loss_grad, w0, jac=True, method="L-BFGS-B", bounds=[(0.0, None)] * z.shape[1],
                    options={"maxiter": 500, "ftol": 1e-12, "gtol": 1e-9}).x


def component_table(parts: dict[str, CrossFit], weights: list[np.ndarray] | None, groups: np.ndarray, seed: int
                    ) -> list[dict]:
    """Each component's out-of-fold accuracy with its interval and its mean weight in the stack."""
    rows = []
    for i, (name, cf) in enumerate(parts.items()):
        ci = metrics.grouped_accuracy_ci(cf.margin, groups, seed=seed)
        row = {"name": name, "acc": metrics.accuracy(cf.margin),
               "acc_ci": None if ci is None else [round(ci[0], 5), round(ci[1], 5)]}
        if weights is not None:
            row["weight"] = round(float(np.mean([w[i] for w in weights])), 4)
        rows.append(row)
    return rows


class ComponentProbe(Probe):
    """A text-role probe made of components (module docstring); subclasses say which."""

    role = "text"

    def __init__(self, cfg, ctx=None) -> None:
        super().__init__(cfg, ctx)
        self.parts = resolve_components(cfg, ctx)
        self.needs = frozenset(text_inputs(cfg, ctx))

    def prepare(self, ctx, shard: tuple[int, int]) -> None:
        if "finetune" in self.parts:
            from audit.probes.finetune import finetune_cross_fit

            self.finetuned = finetune_cross_fit(self.cfg, ctx.rows, ctx.text_keys, ctx.folds, ctx.cache_root, ctx.device,
                                                shard=shard, nested=len(self.parts) > 1)

    def fit(self, ctx, fitted) -> ProbeResult:
        parts = {name: BUILD[name](self, ctx, fitted) for name in self.parts}
        if len(parts) == 1:
            combined, weights = next(iter(parts.values())), None
        else:
            combined, weights = stack(parts, ctx.folds)
        ctx.inputs["prompt_blind"] = None if combined.blind is None else combined.blind.margin
        table = component_table(parts, weights, ctx.groups, self.cfg.seed)
        columns = [(f"{n}_margin", cf.margin, None) for n, cf in parts.items() if n != "cue"]
        nested = None if combined.nested is None else (lambda o, arr=combined.nested: arr[int(o)])
        # `cue_acc` stays the cue model's (role `cue`): the component's accuracy is in the table only
        summary = {"text_components": table, **{f"{r['name']}_acc": r["acc"] for r in table if r["name"] != "cue"}}
        return ProbeResult(combined.margin, nested=nested, columns=columns, summary=summary,
                           encoder=self.encoder_info(ctx, weights))

    def encoder_info(self, ctx, weights) -> dict:
        from audit.probes.lexical import LEXICAL_INFO

        info = {"probe": self.name, "components": list(self.parts)}
        if {"tokens", "embedding"} & set(self.parts):
            info["name"] = self.cfg.text_encoder
        if "tokens" in self.parts:
            info["tokens_fingerprint"] = ctx.inputs["tokens"][0].fingerprint
        if "embedding" in self.parts:
            enc = ctx.inputs["text"][0]
            info.update(pooling=enc.pooling, fingerprint=enc.fingerprint)
        if "lexical" in self.parts:
            info["lexical"] = LEXICAL_INFO
        if "finetune" in self.parts:
            info["finetune"] = self.finetuned_info
        if weights is not None:
            info["stacker"] = "BT logistic on the standardised component margins, nested cross-fitting"
        return info

    @property
    def finetuned_info(self) -> dict:
        return self.finetuned.info or {}


@register
class StackProbe(ComponentProbe):
    """The default text-only shortcut model: the nested stack of the `--stack` components."""

    name = "stack"

    @classmethod
    def selected(cls, cfg) -> bool:
        return cfg.text_probe == "stack"


def _single(probe_name: str, component: str):
    @register
    class Single(ComponentProbe):
        name = probe_name
        __doc__ = f"`--text-probe {component}`: the `{component}` component alone (module docstring)."

        @classmethod
        def selected(cls, cfg) -> bool:
            return cfg.text_probe == component

    Single.__name__ = Single.__qualname__ = f"{component.title()}Probe"
    return Single


TokensProbe = _single("text-tokens", "tokens")
TextEmbeddingProbe = _single("text-embedding", "embedding")
LexicalProbe = _single("lexical", "lexical")
FinetuneProbe = _single("text-finetune", "finetune")
CueTextProbe = _single("text-cue", "cue")


@register
class PromptBlindProbe(Probe):
    """The text probe's prompt-blind counterpart (the same components and stacking weights on the
    responses alone, no prompt, no image): `prompt_blind_margin`, `prompt_blind_acc`. Its accuracy
    beside the text probe's says whether the shortcut lives in the answers alone (style, templates)
    or in how the answer relates to the question."""

    name, role = "prompt-blind", "aux"

    @classmethod
    def selected(cls, cfg) -> bool:
        return cfg.text_probe != "finetune"

    def fit(self, ctx, fitted) -> ProbeResult:
        margin = ctx.inputs.get("prompt_blind")
        if margin is None:
            return ProbeResult(np.zeros(ctx.m))
        return ProbeResult(margin, columns=[("prompt_blind_margin", margin, None)],
                           summary={"prompt_blind_acc": metrics.accuracy(margin)},
                           encoder={"probe": f"prompt-blind {self.cfg.text_probe}"})
