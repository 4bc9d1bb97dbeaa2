"""Formulas with hand-worked numbers: BT loss, SFC, SFD, accuracy, AUROC, every weight scheme, folds."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit import metrics
from audit.errors import ConfigError
from audit.folds import assign_folds, group_ids
from audit.schemes import weights


def test_bt_loss_and_sigmoid():
    assert metrics.bt_loss(np.array([0.0]))[0] == pytest.approx(math.log(2))
    assert metrics.bt_loss(np.array([2.0]))[0] == pytest.approx(math.log(1 + math.exp(-2)))   # 0.126928
    assert metrics.bt_loss(np.array([-1000.0]))[0] == pytest.approx(1000.0)                  # no overflow
    assert metrics.sigmoid(np.array([math.log(4)]))[0] == pytest.approx(0.8)


def test_sfc_hand_worked():
    # text margin -2 (L_t = 2.126928), mm margin 3 (L = 0.048587): SFC = 2.126928 / 2.175515 = 0.977666
    lt, lm = metrics.bt_loss(np.array([-2.0])), metrics.bt_loss(np.array([3.0]))
    assert metrics.sfc(lt, lm)[0] == pytest.approx(0.977666, abs=1e-6)
    assert metrics.sfc(np.array([1.0, 0.0]), np.array([1.0, 0.0])).tolist() == [0.5, 0.5]


def test_sfd_hand_worked():
    # text right on pairs 0-3, wrong on 4-5; mm right on 3 of the first 4 and 0 of the last 2
    text = np.array([1, 1, 1, 1, -1, -1.0])
    mm = np.array([1, 1, 1, -1, -1, -1.0])
    assert metrics.sfd(text, mm) == pytest.approx(100 * (0.75 - 0.0))
    assert math.isnan(metrics.sfd(np.ones(3), np.ones(3)))


def test_accuracy_counts_ties_half_and_auroc():
    assert metrics.accuracy(np.array([1.0, -1.0, 0.0, 2.0])) == pytest.approx(2.5 / 4)
    assert metrics.auroc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    assert metrics.auroc(np.array([1.0, 1.0]), np.array([0, 1])) == pytest.approx(0.5)


TEXT_PROB = np.array([0.9, 0.6, 0.2, 0.5])
SFC = np.array([0.1, 0.4, 0.8, 0.5])
OK = np.array([True, True, True, False])


@pytest.mark.parametrize("scheme,expected", [
    ("sfc", [0.1 / (1.3 / 3), 0.4 / (1.3 / 3), 0.8 / (1.3 / 3), 0.0]),          # 0.230769, 0.923077, 1.846154
    ("debias", [0.1 / (1.3 / 3), 0.4 / (1.3 / 3), 0.8 / (1.3 / 3), 0.0]),        # raw 1-p = 0.1, 0.4, 0.8
    ("ipw", [0.428571, 0.642857, 1.928571, 0.0]),     # raw 1.1111, 1.6667, 5; mean 2.59259
    ("jtt", [1 / (7 / 3), 1 / (7 / 3), 5 / (7 / 3), 0.0]),
    ("none", [1.0, 1.0, 1.0, 0.0]),
])
def test_scheme_weights_have_mean_one_over_ok_rows(scheme, expected):
    w = weights(scheme, OK, text_prob=TEXT_PROB, sfc=SFC)
    assert w == pytest.approx(expected, rel=1e-4)
    assert w[OK].mean() == pytest.approx(1.0)


def test_ipw_floor_and_clip():
    w = weights("ipw", np.ones(2, bool), text_prob=np.array([0.001, 0.5]), sfc=np.zeros(2), ipw_floor=0.1)
    assert w == pytest.approx([10 / 6, 2 / 6])          # raw 1/0.1 = 10 and 2, mean 6
    w = weights("ipw", np.ones(3, bool), text_prob=np.array([0.05, 0.5, 0.5]), sfc=np.zeros(3), clip=1.5)
    assert w.max() <= 1.5 + 1e-9 and w.mean() == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="unknown scheme `x`; valid: sfc, sfc-residual, debias, ipw, jtt, none"):
        weights("x", OK, text_prob=TEXT_PROB, sfc=SFC)


def test_groups_link_images_rows_and_specific_prompts_not_templates():
    image = ["a", "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k"]
    sample = [str(i) for i in range(12)]
    prompt = ["p1", "p2", "p2", "q", "t", "t", "t", "t", "t", "t", "t", "x"]   # `t` is a template (7 pictures)
    g = group_ids(image, sample, prompt)
    assert g[0] == g[1] == g[2]           # image a links 0-1, prompt p2 links 1-2
    assert len(set(g[4:11])) == 7         # the template prompt links nothing
    assert len(set(g)) == 10


def _union_find_groups(image, sample, prompt, max_pictures=3):
    """The plain reference: union-find over rows sharing a key (None and template prompts skipped: a
    prompt seen with more than `max_pictures` different images; a row without an image is a picture of
    its own), groups numbered by their smallest row."""
    n = len(image)
    parent = list(range(n))

    def find(a):
        while parent[a] != a:
            a = parent[a]
        return a

    pictures: dict = {}
    for i, (p, im) in enumerate(zip(prompt, image)):
        pictures.setdefault(p, set()).add(im if im is not None else ("row", i))
    for keys, is_prompt in ((image, False), (sample, False), (prompt, True)):
        first = {}
        for i, key in enumerate(keys):
            if key is None or (is_prompt and len(pictures[key]) > max_pictures):
                continue
            ra, rb = find(first.setdefault(key, i)), find(i)
            parent[max(ra, rb)] = min(ra, rb)
    roots = [find(i) for i in range(n)]
    order = {r: g for g, r in enumerate(sorted(set(roots)))}
    return [order[r] for r in roots]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.one_of(st.none(), st.integers(0, 40)), st.integers(0, 60),
                          st.one_of(st.none(), st.integers(0, 8))), min_size=1, max_size=200))
def test_vectorised_groups_equal_union_find(rows):
    """`group_ids` labels components by min-label propagation in numpy: the same groups, numbered the
    same way, as a plain union-find (missing keys and template prompts link nothing)."""
    image = [None if a is None else f"i{a}" for a, _, _ in rows]
    sample = [f"s{b}" for _, b, _ in rows]
    prompt = [None if c is None else f"p{c}" for _, _, c in rows]
    assert group_ids(image, sample, prompt).tolist() == _union_find_groups(image, sample, prompt)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 15), st.integers(0, 30), st.integers(0, 10)), min_size=4, max_size=120),
       st.integers(2, 6), st.integers(0, 3))
def test_grouped_folds_never_split_a_group(rows, k, seed):
    image = [f"i{a}" for a, _, _ in rows]
    sample = [f"s{b}" for _, b, _ in rows]
    prompt = [f"p{c}" for _, _, c in rows]
    groups = group_ids(image, sample, prompt)
    folds = assign_folds(groups, k, seed)
    for key in (image, sample):
        first = {}
        for f, kk in zip(folds, key):
            assert first.setdefault(kk, f) == f   # one image / one source row -> one fold
    for gid in set(groups.tolist()):
        assert len(set(folds[groups == gid].tolist())) == 1
    assert set(folds.tolist()) <= set(range(k))
    assert (assign_folds(groups, k, seed) == folds).all()     # seeded: same input, same folds


def test_sfc_schemes_are_named_for_what_their_multimodal_loss_is():
    from audit.schemes import check_scheme, schemes_for, sfc_kind_of

    assert "sfc-residual" in schemes_for("residual") and "sfc" not in schemes_for("residual")
    assert "sfc" in schemes_for("paper") and "sfc-residual" not in schemes_for("paper")
    check_scheme("sfc-residual", "residual")
    check_scheme("sfc", "paper")
    with pytest.raises(ConfigError, match="needs a full multimodal model's loss"):
        check_scheme("sfc", "residual")
    with pytest.raises(ConfigError, match="use `--scheme sfc`"):
        check_scheme("sfc-residual", "paper")
    # audits written before `sfc_kind` existed are told by their multimodal side
    assert sfc_kind_of({"encoders": {"mm": "reward model"}}) == "paper"
    assert sfc_kind_of({"encoders": {"mm": "bilinear probe on 32x32 PCA dims"}}) == "residual"
    w = weights("sfc-residual", OK, text_prob=TEXT_PROB, sfc=SFC)
    assert w == pytest.approx(weights("sfc", OK, text_prob=TEXT_PROB, sfc=SFC))   # one formula, two names
