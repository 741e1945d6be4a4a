"""Property tests for minidiff.views: every view is invertible and orthogonal."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from minidiff.views import VIEW_NAMES, get_view

seeds = st.integers(0, 2**31 - 1)
PERMUTATIONS = [n for n in VIEW_NAMES if n != "negate"]


def _params(name, seed):
    if name == "patch_permute":
        return {"patch_size": 4, "seed": seed}
    if name == "jigsaw":
        return {"pieces": 4, "seed": seed}
    return {}


def _img(seed, shape=(2, 3, 16, 16)):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@given(name=st.sampled_from(VIEW_NAMES), seed=seeds)
def test_inverse_undoes_view_and_view_undoes_inverse(name, seed):
    """inverse(view(x)) == x == view(inverse(x)) for every view."""
    v = get_view(name, **_params(name, seed % 1000))
    x = _img(seed)
    assert torch.equal(v.inverse(v.view(x)), x)
    assert torch.equal(v.view(v.inverse(x)), x)


@given(name=st.sampled_from(PERMUTATIONS), seed=seeds)
def test_permutation_views_preserve_the_pixel_multiset(name, seed):
    """Each channel of view(x) holds exactly the values of x, rearranged."""
    v = get_view(name, **_params(name, seed % 1000))
    x = _img(seed)
    y = v(x)
    assert torch.equal(y.flatten(2).sort(-1).values, x.flatten(2).sort(-1).values)


@given(name=st.sampled_from(VIEW_NAMES), seed=seeds)
def test_every_view_preserves_the_l2_norm(name, seed):
    """|view(x)| == |x|: the views are orthogonal maps, so N(0, I) noise stays N(0, I)."""
    v = get_view(name, **_params(name, seed % 1000))
    x = _img(seed)
    torch.testing.assert_close(v(x).flatten(1).norm(dim=1), x.flatten(1).norm(dim=1))


@given(name=st.sampled_from(VIEW_NAMES), seed=seeds, a=st.floats(-2, 2))
def test_every_view_is_linear(name, seed, a):
    """view(a x + y) == a view(x) + view(y), which is what lets views act on noisy images."""
    v = get_view(name, **_params(name, seed % 1000))
    x, y = _img(seed), _img(seed + 1)
    torch.testing.assert_close(v(a * x + y), a * v(x) + v(y))


def test_named_views_do_what_they_say():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert torch.equal(get_view("flip")(x)[0, 0, 0], x[0, 0, 3])  # upside down
    assert torch.equal(get_view("hflip")(x)[0, 0, :, 0], x[0, 0, :, 3])  # mirror
    assert torch.equal(get_view("rot180")(x), get_view("rot90")(get_view("rot90")(x)))
    assert torch.equal(get_view("rot270")(get_view("rot90")(x)), x)
    assert torch.equal(get_view("negate")(x), -x)
    assert torch.equal(get_view("identity")(x), x)


def test_patch_permutation_moves_whole_patches_and_is_seeded():
    x = torch.arange(64.0).reshape(1, 1, 8, 8)
    v = get_view("patch_permute", patch_size=4, seed=3)
    y = v(x)
    patches_in = {tuple(x[0, 0, i : i + 4, j : j + 4].flatten().tolist()) for i in (0, 4) for j in (0, 4)}
    patches_out = {tuple(y[0, 0, i : i + 4, j : j + 4].flatten().tolist()) for i in (0, 4) for j in (0, 4)}
    assert patches_in == patches_out
    assert torch.equal(get_view("patch_permute", patch_size=4, seed=3)(x), y)
    seeds_differ = any(
        not torch.equal(get_view("patch_permute", patch_size=2, seed=s)(x), get_view("patch_permute", patch_size=2, seed=0)(x))
        for s in range(1, 5)
    )
    assert seeds_differ


def test_jigsaw_is_not_the_identity():
    x = _img(0, (1, 3, 16, 16))
    assert not torch.equal(get_view("jigsaw", pieces=4, seed=0)(x), x)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="unknown view"):
        get_view("spin")
    with pytest.raises(ValueError, match="bad parameters"):
        get_view("flip", angle=3)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        get_view("flip")(torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match="multiple of patch_size"):
        get_view("patch_permute", patch_size=5)(torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="square"):
        get_view("rot90")(torch.zeros(1, 3, 8, 6))
