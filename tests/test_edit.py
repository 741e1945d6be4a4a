"""SDEdit, conditional image-to-image and inpainting, checked with exact denoisers.

The data are six 8x8 images of +-1 pixels (any two at L2 distance >= 4) and the denoiser is
their optimal denoiser (minidiff.analytic), so the right answer of every edit is a known
member of the set.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from minidiff.analytic import finite_data_denoiser, finite_data_model
from minidiff.data import sample_digits_real
from minidiff.edit import check_mask, image_to_image, inpaint, sdedit
from minidiff.schedule import DDPMSchedule, FlowSchedule, strided_timesteps

IF = DDPMSchedule.deepfloyd()
LIN = DDPMSchedule.linear()
FLOW = FlowSchedule()

# (schedule, timesteps, an i_start with little noise, tolerance per pixel at the end)
SETUPS = {
    "ddpm-deepfloyd": (IF, strided_timesteps(990, 30), 20, 0.1),  # t = 390
    "ddpm-linear": (LIN, strided_timesteps(299, 10), 20, 0.1),  # t = 99
    "flow": (FLOW, FlowSchedule.timesteps(20), 10, 1e-5),  # t = 0.5
}
setups = pytest.mark.parametrize("setup", list(SETUPS))


def make_data(seed: int = 0) -> torch.Tensor:
    data = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(seed)).sign()
    dist = torch.cdist(data.flatten(1), data.flatten(1)) + 100 * torch.eye(6)
    assert dist.min() >= 4
    return data


def hole_mask() -> torch.Tensor:
    mask = torch.zeros(8, 8)
    mask[2:6, 2:7] = 1  # 20 of 64 pixels to regenerate
    return mask


# ----------------------------------------------------------------------------------------
# SDEdit and image-to-image
# ----------------------------------------------------------------------------------------


@setups
def test_sdedit_with_little_noise_returns_the_member_nearest_the_input(setup):
    """Each member plus noise of std 0.4 per pixel: SDEdit from a low noise level must
    project it back onto that member (its nearest one)."""
    schedule, ts, i_start, tol = SETUPS[setup]
    data = make_data()
    image = data + 0.4 * torch.randn(data.shape, generator=torch.Generator().manual_seed(1))
    nearest = torch.cdist(image.flatten(1), data.flatten(1)).argmin(1)
    assert torch.equal(nearest, torch.arange(6))
    x = sdedit(finite_data_denoiser(data, schedule), image, schedule, ts, i_start,
               generator=torch.Generator().manual_seed(2), progress=False, check_range=False)  # noisy: beyond +-1
    assert (x - data).abs().max() < tol


@setups
def test_sdedit_from_pure_noise_still_ends_on_a_member(setup):
    schedule, ts, _, tol = SETUPS[setup]
    data = make_data()
    x = sdedit(finite_data_denoiser(data, schedule), torch.zeros(4, 1, 8, 8), schedule, ts, 0,
               generator=torch.Generator().manual_seed(3), progress=False)
    nearest = data[torch.cdist(x.flatten(1), data.flatten(1)).argmin(1)]
    assert (x - nearest).abs().max() < tol


@setups
def test_image_to_image_with_another_class_returns_that_class_member_nearest_the_input(setup):
    """Class 0: three images; class 1: the same three with 6 pixels changed (an edit), so the
    class-1 image nearest to each class-0 image is its own edit (L2 distance 4.9, against
    about 11 to the others). Guided by class 1 from a low noise level, image-to-image must
    turn every class-0 image into its own edit."""
    schedule, ts, i_start, tol = SETUPS[setup]
    originals = make_data()[:3]
    edits = originals.clone()
    g = torch.Generator().manual_seed(4)
    for e in edits:
        e.view(-1)[torch.randperm(64, generator=g)[:6]] *= -1
    data, labels = torch.cat([originals, edits]), torch.tensor([0, 0, 0, 1, 1, 1])
    model = finite_data_model(data, schedule, labels, 2)
    image = originals + 0.1 * torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    x = image_to_image(model, image, F.one_hot(torch.tensor([1]), 2).float(), torch.zeros(1, 2), 2.0,
                       schedule, ts, i_start, generator=torch.Generator().manual_seed(2), progress=False,
                       check_range=False)  # noisy: beyond +-1
    assert (x - edits).abs().max() < tol


def test_sdedit_same_seed_is_bit_identical_and_returns_the_trajectory():
    data = make_data()
    den = finite_data_denoiser(data, IF)
    ts = strided_timesteps(990, 30)
    run = lambda seed: sdedit(den, data[:2], IF, ts, 5, generator=torch.Generator().manual_seed(seed),  # noqa: E731
                              progress=False, return_intermediates=True)
    (a, xs), (b, _), (c, _) = run(0), run(0), run(1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len(xs) == len(ts) - 5 and torch.equal(xs[-1], a)


# ----------------------------------------------------------------------------------------
# Inpainting
# ----------------------------------------------------------------------------------------


@setups
def test_inpainting_keeps_known_pixels_exactly_and_fills_the_hole_from_the_matching_member(setup):
    """The hole is filled with noise; the 44 known pixels identify the member uniquely, so the
    fill must be that member's pixels, and every known pixel must be returned bit for bit."""
    schedule, ts, _, tol = SETUPS[setup]
    data = make_data()
    mask = hole_mask()
    garbage = 3 * torch.randn(data.shape, generator=torch.Generator().manual_seed(5))
    image = data * (1 - mask) + garbage * mask
    x = inpaint(finite_data_denoiser(data, schedule), image, mask, schedule, ts,
                generator=torch.Generator().manual_seed(6), progress=False)
    known = mask.expand_as(image) == 0
    assert torch.equal(x[known], image[known])
    assert (x - data).abs().max() < tol


def test_inpainting_mask_forms_are_equivalent_and_seeded_runs_are_bit_identical():
    """(H, W), (1, 1, H, W) and bool masks give the same result for the same seed."""
    data = make_data()
    den = finite_data_denoiser(data, IF)
    ts = strided_timesteps(990, 90)
    image = data[:2]
    mask = hole_mask()
    runs = [inpaint(den, image, m, IF, ts, generator=torch.Generator().manual_seed(0), progress=False)
            for m in (mask, mask[None, None], mask.bool(), mask.expand(2, 1, 8, 8))]
    assert all(torch.equal(runs[0], r) for r in runs[1:])


def test_inpainting_with_an_empty_mask_returns_the_image_and_a_full_mask_samples_freely():
    data = make_data()
    den = finite_data_denoiser(data, FLOW)
    ts = FlowSchedule.timesteps(10)
    image = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))  # beyond +-1: not checked
    assert torch.equal(inpaint(den, image, torch.zeros(8, 8), FLOW, ts, progress=False, check_range=False), image)
    x, xs = inpaint(den, image, torch.ones(8, 8), FLOW, ts, generator=torch.Generator().manual_seed(1),
                    progress=False, return_intermediates=True)
    nearest = data[torch.cdist(x.flatten(1), data.flatten(1)).argmin(1)]
    assert (x - nearest).abs().max() < 1e-5
    assert len(xs) == len(ts) and torch.equal(xs[-1], x)


@setups
def test_inpainting_with_resampling_keeps_known_pixels_and_calls_back_once_per_step(setup):
    """RePaint's resampling (3 rounds per step): the same exact answer as plain replacement,
    one state and one callback per step of the timesteps, and the model called 3 times per
    step but the last (taken once, as in RePaint)."""
    schedule, ts, _, tol = SETUPS[setup]
    data = make_data()
    mask = hole_mask()
    image = data * (1 - mask)
    den = finite_data_denoiser(data, schedule)
    calls, seen = [], []
    counting = lambda x, t: calls.append(t[0].item()) or den(x, t)  # noqa: E731
    x, xs = inpaint(counting, image, mask, schedule, ts, generator=torch.Generator().manual_seed(6), progress=False,
                    resample_steps=3, return_intermediates=True, callback=lambda i, *_: seen.append(i))
    known = mask.expand_as(image) == 0
    assert torch.equal(x[known], image[known]) and (x - data).abs().max() < tol
    assert len(xs) == len(ts) and torch.equal(xs[-1], x) and seen == list(range(len(ts) - 1))
    assert len(calls) == 3 * (len(ts) - 2) + 1


@pytest.mark.slow  # 16 seeds x (1 + 10 rounds): about 5 s on a busy 2-core CPU
def test_resampling_completes_every_half_masked_digit_where_plain_replacement_may_not():
    """RePaint (Lugmayr et al., 2022) against the course's plain replacement, on the exact
    denoiser of eight real digits (classes 0-7, in [-1, 1]). The right half of one digit is
    regenerated from pure noise with IF's schedule in strides of 90; the completion is right
    when its nearest member is the source digit. Plain replacement lets the hole commit to
    another digit before the known half's evidence reaches it (15 of these 16 seeds; 14 in
    strides of 30); ten rounds of resampling per step complete all 16."""
    images, labels = sample_digits_real()
    data = images[[int((labels == k).nonzero()[0]) for k in range(8)]] * 2 - 1
    den = finite_data_denoiser(data, IF)
    mask = torch.zeros(28, 28)
    mask[:, 14:] = 1

    def completed(resample_steps: int) -> int:
        right = 0
        for seed in range(16):
            source = seed % 8
            x = inpaint(den, data[source : source + 1], mask, IF, strided_timesteps(990, 90),
                        generator=torch.Generator().manual_seed(seed), resample_steps=resample_steps, progress=False)
            right += int(torch.cdist(x.flatten(1), data.flatten(1)).argmin()) == source
        return right

    plain, resampled = completed(1), completed(10)
    assert resampled == 16 and resampled >= plain, f"plain {plain}/16, resampling {resampled}/16"


# ----------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------


def test_edit_input_errors_are_value_errors():
    data = make_data()
    den = finite_data_denoiser(data, IF)
    ts = strided_timesteps(990, 90)  # 12 entries
    image = data[:2]
    with pytest.raises(ValueError, match="H x W"):
        inpaint(den, image, torch.ones(7, 8), IF, ts, progress=False)
    with pytest.raises(ValueError, match="does not fit"):
        inpaint(den, image, torch.ones(3, 1, 8, 8), IF, ts, progress=False)
    with pytest.raises(ValueError, match="0 .keep. or 1"):
        inpaint(den, image, torch.full((8, 8), 0.5), IF, ts, progress=False)
    with pytest.raises(ValueError, match="mask must be"):
        inpaint(den, image, torch.ones(1, 8, 8), IF, ts, progress=False)
    with pytest.raises(ValueError, match="mask must be a tensor"):
        inpaint(den, image, [[1]], IF, ts, progress=False)
    for bad in (-1, 11, 12):
        with pytest.raises(ValueError, match="i_start"):
            sdedit(den, image, IF, ts, bad, progress=False)
        with pytest.raises(ValueError, match="i_start"):
            inpaint(den, image, hole_mask(), IF, ts, i_start=bad, progress=False)
    with pytest.raises(ValueError, match="B, C, H, W"):
        sdedit(den, image[0], IF, ts, 3, progress=False)
    with pytest.raises(ValueError, match="B, C, H, W"):
        inpaint(den, image[0], hole_mask(), IF, ts, progress=False)
    with pytest.raises(ValueError, match="float"):
        sdedit(den, image.long(), IF, ts, 3, progress=False)
    with pytest.raises(ValueError, match="resample_steps"):
        inpaint(den, image, hole_mask(), IF, ts, resample_steps=0, progress=False)


def test_check_mask_returns_a_broadcastable_float_mask():
    image = torch.zeros(2, 3, 8, 8, dtype=torch.float64)
    m = check_mask(hole_mask().bool(), image)
    assert m.shape == (1, 1, 8, 8) and m.dtype == torch.float64 and m.sum() == 20
