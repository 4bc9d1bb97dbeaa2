"""The probe interface: one probe per role chosen by the config, a registered probe runs in its role
and owns its columns and summary entries, and only the inputs the chosen probes need are encoded."""

from __future__ import annotations

import polars as pl
import pytest

from audit.config import ScoreConfig, SynthConfig
from audit.probes import base
from audit.probes.cues import CUE_FUNCS
from audit.score import score
from audit.synth import synth


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    d = tmp_path_factory.mktemp("probes")
    return synth(SynthConfig(env="leadin", out=d / "s", n=80, image_size=32)).parent


AUX = ("prompt-blind", "slices", "phrases")


@pytest.mark.parametrize("kw,expected,aux", [
    ({}, ("cue", "stack", "bilinear"), AUX),
    ({"mm_scores": "a,b"}, ("cue", "stack", "external-scores"), AUX),
    ({"rm": "some/model", "scheme": "sfc"}, ("cue", "stack", "reward-model"), AUX),
    ({"text_probe": "finetune", "mm_scores": "a"}, ("cue", "text-finetune", "external-scores"), ("slices", "phrases")),
    ({"text_probe": "lexical"}, ("cue", "lexical", "bilinear"), AUX),
    ({"text_probe": "embedding"}, ("cue", "text-embedding", "bilinear"), AUX),
    ({"text_probe": "tokens"}, ("cue", "text-tokens", "bilinear"), AUX),
    ({"text_probe": "cue"}, ("cue", "text-cue", "bilinear"), AUX),
    ({"text_only": True, "no_phrases": True}, ("cue", "stack", "text-only"), ("prompt-blind", "slices")),
])
def test_the_config_chooses_one_probe_per_role_then_the_auxiliaries(tmp_path, kw, expected, aux):
    if kw.pop("no_phrases", False):
        kw["phrases"] = False
    cfg = ScoreConfig(source=tmp_path, out=tmp_path / "o", **kw)
    chosen = base.select(cfg)
    assert tuple(chosen)[:3] == ("cue", "text", "mm") and tuple(p.name for p in chosen.values())[:3] == expected
    assert tuple(chosen)[3:] == aux and all(chosen[a].role == "aux" for a in aux)


def test_a_registered_probe_runs_in_its_role_and_owns_its_columns_and_summary(pairs, tmp_path, monkeypatch):
    class LengthProbe(base.Probe):
        """A text probe that is only the length cue: enough to show the interface end to end."""

        name, role = "test-length", "text"

        @classmethod
        def selected(cls, cfg) -> bool:
            return True

        def fit(self, ctx, fitted) -> base.ProbeResult:
            margin = ctx.cue_diff[:, list(CUE_FUNCS).index("length")]
            return base.ProbeResult(margin, columns=[("length_margin", margin, None)],
                                    encoder={"probe": "test-length"}, summary={"length_probe": {"n": ctx.m}})

    monkeypatch.setattr(base, "PROBES", {"test-length": LengthProbe, **base.PROBES})   # first: chosen for `text`
    s = score(ScoreConfig(source=pairs, out=tmp_path / "a", cache_dir=tmp_path / "c", folds=3))
    assert {k: s["probes"][k] for k in ("cue", "text", "mm")} == {"cue": "cue", "text": "test-length", "mm": "bilinear"}
    assert s["encoders"]["text"] == {"probe": "test-length"} and s["length_probe"] == {"n": 80}
    df = pl.read_parquet(tmp_path / "a" / "audited.parquet")
    assert "length_margin" in df.columns
    assert (df["text_margin"] > 0).mean() == pytest.approx((df["length_margin"] > 0).mean(), abs=0.05)


def test_only_the_inputs_the_chosen_probes_need_are_encoded(tmp_path, monkeypatch):
    """With `--mm-scores` and the fine-tuned text probe nothing needs the text encoder or the images."""
    import json

    import audit.encoders.image as image_mod
    import audit.encoders.text as text_mod
    from audit.inputs import InputStore
    from audit.tiny import tiny_text_rm
    from conftest import png_bytes

    rows = []
    for i in range(40):
        (tmp_path / f"{i}.png").write_bytes(png_bytes((i * 6, 100, 200 - i)))
        rows.append({"prompt": f"What is {i}?", "chosen": f"Surely it is {i}.", "rejected": f"It is {i + 1}.",
                     "image": f"{i}.png", "rm_c": float(i % 3), "rm_r": 1.0})
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))

    def boom(*a, **kw):
        raise AssertionError("an encoder no probe needs was loaded")

    monkeypatch.setattr(text_mod, "load_text_encoder", boom)
    monkeypatch.setattr(image_mod, "load_image_encoder", boom)
    s = score(ScoreConfig(source=tmp_path / "d.jsonl", out=tmp_path / "a", mm_scores="rm_c,rm_r", folds=3,
                          text_probe="finetune", finetune_model=str(tiny_text_rm(tmp_path / "textrm")),
                          finetune_epochs=1, finetune_batch=8, cache_dir=tmp_path / "c"))
    assert {k: s["probes"][k] for k in ("cue", "text", "mm")} == {"cue": "cue", "text": "text-finetune",
                                                                  "mm": "external-scores"} and s["n_scored"] == 40
    with pytest.raises(ValueError, match="unknown probe input"):
        InputStore(None, {"audio"})
