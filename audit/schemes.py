"""Weight schemes: per-pair training weights from the audit columns, one function each.

Every scheme returns raw weights for the scored (`ok`) rows; `weights` clips them (optional) and
normalises to mean 1 over those rows. Rows that are not scored get weight 0.

Two schemes read the `sfc` column, and which one applies depends on what its multimodal loss is:
`sfc` is the paper's coefficient, where L_mm is the loss of a full multimodal model (`score --rm` or
`--mm-scores`); `sfc-residual` is the same formula where L_mm is the loss of the offline probe's
margin (text margin plus the image-only residual the bilinear head adds): a different quantity, named
for what it is. An audit records which in `summary.json` (`sfc_kind`: `paper` or `residual`).
"""

from __future__ import annotations

import numpy as np

from audit.registry import Registry

SCHEMES = Registry("scheme")
SCHEME_HELP = SCHEMES.help
register = SCHEMES.register


@register("sfc", "the paper's Shortcut-Failure Coefficient L_text / (L_mm + L_text), L_mm from a full "
                 "multimodal model (`--rm` or `--mm-scores`)")
def sfc_scheme(*, sfc: np.ndarray, **_) -> np.ndarray:
    return sfc


@register("sfc-residual", "the same formula with the offline probe's L_mm (text margin + image-only residual): "
                          "what `sfc` becomes without a full multimodal model")
def sfc_residual_scheme(*, sfc: np.ndarray, **_) -> np.ndarray:
    return sfc


SFC_SCHEME = {"paper": "sfc", "residual": "sfc-residual"}   # sfc_kind -> the scheme that reads that column


def sfc_kind_of(summary: dict) -> str:
    """`paper` or `residual`: what the audit's `sfc` column is (audits written before `sfc_kind` existed
    are told by their multimodal side)."""
    if summary.get("sfc_kind") in SFC_SCHEME or summary.get("sfc_kind") == TEXT_ONLY:
        return summary["sfc_kind"]
    mm = ((summary.get("encoders") or {}).get("mm") or "")
    return "paper" if mm in ("reward model", "external") else "residual"


TEXT_ONLY = "text-only"     # an audit without a multimodal side (`score --text-only`): no SFC


def schemes_for(kind: str) -> list[str]:
    """The schemes that apply to an audit whose `sfc` column is of this kind."""
    if kind == TEXT_ONLY:
        return [s for s in SCHEMES if s not in SFC_SCHEME.values()]
    other = SFC_SCHEME["residual" if kind == "paper" else "paper"]
    return [s for s in SCHEMES if s != other]


def check_scheme(scheme: str, kind: str) -> None:
    """Refuse the `sfc` variant that does not match what the audit's multimodal loss is."""
    SCHEMES.get_or_raise(scheme)
    if kind == TEXT_ONLY and scheme in SFC_SCHEME.values():
        from audit.errors import ConfigError

        raise ConfigError(f"`--scheme {scheme}` needs a multimodal side; a text-only audit has no SFC: use "
                          "`--scheme debias`, `ipw`, `jtt` or `none`")
    if scheme in SFC_SCHEME.values() and scheme != SFC_SCHEME[kind]:
        from audit.errors import ConfigError

        if kind == "residual":
            raise ConfigError("`--scheme sfc` is the paper's coefficient and needs a full multimodal model's loss "
                              "(`score --rm MODEL` or `--mm-scores C,R`); with the offline probe use `--scheme "
                              "sfc-residual` (the probe's image-only residual loss), or another scheme")
        raise ConfigError("`--scheme sfc-residual` is for audits made with the offline probe; this one has a full "
                          "multimodal model, so use `--scheme sfc`")


@register("debias", "1 - text_prob: the classic bias-only-model example reweighting")
def debias_scheme(*, text_prob: np.ndarray, **_) -> np.ndarray:
    return 1.0 - text_prob


@register("ipw", "1 / text_prob (text_prob floored at --ipw-floor): the text model is uninformative "
                 "under the weighted distribution")
def ipw_scheme(*, text_prob: np.ndarray, ipw_floor: float = 0.05, **_) -> np.ndarray:
    return 1.0 / np.maximum(text_prob, ipw_floor)


@register("jtt", "Just Train Twice: pairs the text model gets wrong count --jtt-factor times")
def jtt_scheme(*, text_prob: np.ndarray, jtt_factor: float = 5.0, **_) -> np.ndarray:
    return np.where(text_prob < 0.5, jtt_factor, 1.0)


@register("none", "every pair weight 1")
def none_scheme(*, text_prob: np.ndarray, **_) -> np.ndarray:
    return np.ones_like(text_prob)


def weights(scheme: str, ok: np.ndarray, *, text_prob: np.ndarray, sfc: np.ndarray, clip: float | None = None,
            ipw_floor: float = 0.05, jtt_factor: float = 5.0) -> np.ndarray:
    """Weights of `scheme`, mean 1 over `ok` rows (0 elsewhere); `clip` caps the normalised weight."""
    fn = SCHEMES.get_or_raise(scheme)
    ok = np.asarray(ok, dtype=bool)
    out = np.zeros(ok.shape, dtype=np.float64)
    if not ok.any():
        return out
    raw = fn(text_prob=np.asarray(text_prob, float)[ok], sfc=np.asarray(sfc, float)[ok],
                          ipw_floor=ipw_floor, jtt_factor=jtt_factor)
    raw = np.clip(raw, 0.0, None)
    if raw.sum() <= 0:
        raw = np.ones_like(raw)
    w = raw / raw.mean()
    if clip is not None:
        for _ in range(50):   # cap, renormalise, repeat until the cap holds after normalising
            if w.max() <= clip + 1e-12:
                break
            w = np.minimum(w, clip)
            w = w / w.mean()
    out[ok] = w
    return out
