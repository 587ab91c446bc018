"""The batched two-view pipeline against torchvision's per-image transforms."""
import math

import pytest
import torch
import torchvision.transforms.v2 as T
import torchvision.transforms.v2.functional as TF

from sslray import views_ops as ops
from sslray.config import CropGroup, ViewConfig, ViewsConfig
from sslray.views import Crops, blur_kernel_size, eval_view, sample_crop_boxes, sample_view_params


def _images(n=8, size=32, seed=0):
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_two_views_shapes_determinism_and_independence():
    cfg = ViewsConfig(size=24)
    x = _images(16)
    a1, a2 = Crops(cfg)(x, torch.Generator().manual_seed(3))
    b1, b2 = Crops(cfg)(x, torch.Generator().manual_seed(3))
    assert a1.shape == a2.shape == (16, 3, 24, 24) and a1.dtype == torch.float32
    assert torch.equal(a1, b1) and torch.equal(a2, b2)  # same generator state -> same views
    assert not torch.allclose(a1, a2)  # the two views differ
    c1, _ = Crops(cfg)(x, torch.Generator().manual_seed(4))
    assert not torch.allclose(a1, c1)
    # per-image parameters: the same image repeated gets different crops
    same = x[:1].repeat(16, 1, 1, 1)
    v1, _ = Crops(cfg)(same, torch.Generator().manual_seed(5))
    assert len({tuple(v.flatten()[:50].tolist()) for v in v1}) == 16
    # normalised range: (0 - mean)/std .. (1 - mean)/std
    lo = min((0 - m) / s for m, s in zip(cfg.mean, cfg.std))
    hi = max((1 - m) / s for m, s in zip(cfg.mean, cfg.std))
    assert a1.min() >= lo - 1e-5 and a1.max() <= hi + 1e-5


def test_crop_boxes_follow_torchvision_distribution():
    cfg = ViewConfig(crop_scale=(0.08, 1.0), crop_ratio=(3 / 4, 4 / 3))
    n, H, W = 4000, 32, 48
    ours = sample_crop_boxes(cfg, n, H, W, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    ref = torch.tensor([T.RandomResizedCrop.get_params(torch.empty(3, H, W), list(cfg.crop_scale), list(cfg.crop_ratio))
                        for _ in range(n)], dtype=torch.float32)
    for boxes in (ours, ref):  # inside the image
        i, j, h, w = boxes.unbind(1)
        assert (i >= 0).all() and (j >= 0).all() and (i + h <= H).all() and (j + w <= W).all() and (h >= 1).all()

    def stats(b):
        area = b[:, 2] * b[:, 3] / (H * W)
        logr = torch.log(b[:, 3] / b[:, 2])
        centre_x = (b[:, 1] + b[:, 3] / 2) / W
        return torch.stack([area.mean(), area.quantile(0.1), area.quantile(0.9), logr.mean(), logr.std(), centre_x.mean()])

    torch.testing.assert_close(stats(ours), stats(ref), atol=0.02, rtol=0.03)


def test_fallback_is_the_central_crop_when_no_try_fits():
    cfg = ViewConfig(crop_scale=(1.0, 1.0), crop_ratio=(2.0, 3.0))  # impossible on a square image
    boxes = sample_crop_boxes(cfg, 5, 32, 32, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    ref = T.RandomResizedCrop.get_params(torch.empty(3, 32, 32), [1.0, 1.0], [2.0, 3.0])
    assert all(tuple(b.int().tolist()) == tuple(ref) for b in boxes)


def test_application_rates_and_factor_ranges():
    cfg = ViewConfig(hflip_p=0.5, jitter_p=0.8, grayscale_p=0.2, blur_p=0.3, solarize_p=0.1, brightness=0.4,
                     contrast=0.4, saturation=0.2, hue=0.1, blur_sigma=(0.1, 2.0))
    p = sample_view_params(cfg, 20000, 32, 32, torch.Generator().manual_seed(0))
    for key, rate in (("flip", 0.5), ("jitter", 0.8), ("gray", 0.2), ("blur", 0.3), ("solarize", 0.1)):
        assert p[key].float().mean().item() == pytest.approx(rate, abs=0.015), key
    f = p["factors"]
    for col, (lo, hi) in enumerate([(0.6, 1.4), (0.6, 1.4), (0.8, 1.2), (-0.1, 0.1)]):
        assert f[:, col].min() >= lo and f[:, col].max() <= hi
        assert f[:, col].mean().item() == pytest.approx((lo + hi) / 2, abs=0.01)
    assert p["sigma"].min() >= 0.1 and p["sigma"].max() <= 2.0
    # the jitter order is a permutation per image, all 24 orders occur
    assert (p["order"].sort(1).values == torch.arange(4)).all()
    assert len({tuple(o) for o in p["order"][:2000].tolist()}) == 24


def test_zero_and_one_probabilities():
    x = _images(64)
    plain = CropGroup(crop_scale=(1, 1), crop_ratio=(1, 1), hflip_p=0, jitter_p=0, grayscale_p=0, blur_p=0, solarize_p=0)
    never = ViewsConfig(crops=[plain, plain])
    v1, v2 = Crops(never)(x, torch.Generator().manual_seed(0))
    torch.testing.assert_close(v1, eval_view(x, never))  # full-image crop, nothing else: the eval view
    torch.testing.assert_close(v2, v1)
    always = CropGroup(crop_scale=(1, 1), crop_ratio=(1, 1), hflip_p=1, jitter_p=0, grayscale_p=1, blur_p=0,
                       solarize_p=0, count=2)
    v, _ = Crops(ViewsConfig(crops=[always], mean=(0, 0, 0), std=(1, 1, 1)))(x, torch.Generator())
    gray = ops.grayscale(x.float() / 255).flip(-1).expand(-1, 3, -1, -1)
    torch.testing.assert_close(v, gray, atol=1e-5, rtol=0)


@pytest.mark.parametrize("op, ref, factors", [
    (ops.brightness, TF.adjust_brightness, [0.6, 1.0, 1.4]),
    (ops.contrast, TF.adjust_contrast, [0.6, 1.0, 1.4]),
    (ops.saturation, TF.adjust_saturation, [0.0, 0.8, 1.2]),
    (ops.hue, TF.adjust_hue, [-0.1, 0.0, 0.07]),
])
def test_colour_ops_match_torchvision_per_image(op, ref, factors):
    x = _images(3).float() / 255
    ours = op(x, torch.tensor(factors))
    theirs = torch.stack([ref(img, f) for img, f in zip(x, factors)])
    torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=0)


def test_grayscale_solarize_blur_match_torchvision():
    x = _images(4).float() / 255
    torch.testing.assert_close(ops.grayscale(x).expand(-1, 3, -1, -1), TF.rgb_to_grayscale(x, num_output_channels=3),
                               atol=1e-6, rtol=0)
    torch.testing.assert_close(ops.solarize(x, 0.5), TF.solarize(x, 0.5))
    sigmas = torch.tensor([0.3, 0.9, 1.5, 2.0])
    k = blur_kernel_size(32)
    ours = ops.gaussian_blur(x, sigmas, k)
    theirs = torch.stack([TF.gaussian_blur(img, [k, k], [float(s), float(s)]) for img, s in zip(x, sigmas)])
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_crop_resize_flip_matches_torchvision_resized_crop():
    """Upscaling crops (all CIFAR views) match torchvision's bilinear resized_crop (no antialias)."""
    x = _images(4).float() / 255
    boxes = torch.tensor([[0, 0, 32, 32], [3, 5, 20, 17], [10, 2, 12, 25], [0, 8, 16, 16]])
    flip = torch.tensor([False, True, False, True])
    ours = ops.crop_resize_flip(x, boxes, flip, 32)
    for k in range(4):
        i, j, h, w = boxes[k].tolist()
        ref = TF.resized_crop(x[k], i, j, h, w, [32, 32], antialias=False)
        ref = ref.flip(-1) if flip[k] else ref
        torch.testing.assert_close(ours[k], ref, atol=1e-5, rtol=0)


def test_eval_view_resizes_and_centre_crops():
    cfg = ViewsConfig(size=16, mean=(0, 0, 0), std=(1, 1, 1))
    x = _images(2, size=32)
    out = eval_view(x, cfg)
    ref = torch.stack([TF.center_crop(TF.resize(img.float() / 255, [16], antialias=True), [16]) for img in x])
    assert out.shape == (2, 3, 16, 16)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_asymmetric_preset_blurs_view1_and_solarizes_view2():
    from sslray.config import load_config

    cfg = load_config({"views": {"preset": "asymmetric"}}).views
    p1 = sample_view_params(cfg.crops[0], 2000, 32, 32, torch.Generator().manual_seed(0))
    p2 = sample_view_params(cfg.crops[1], 2000, 32, 32, torch.Generator().manual_seed(1))
    assert p1["blur"].all() and not p1["solarize"].any()
    assert p2["blur"].float().mean().item() == pytest.approx(0.1, abs=0.02)
    assert p2["solarize"].float().mean().item() == pytest.approx(0.2, abs=0.03)
    assert math.isclose(cfg.crops[0].hflip_p, 0.5)


def test_crop_groups_give_multi_crop_in_group_order():
    from sslray.config import from_dict  # the views alone (a two-view method would refuse five crops)

    cfg = from_dict({"views": {"size": 24, "crops": [{"count": 2}, {"count": 3, "size": 12, "crop_scale": [0.05, 0.4]}]}}).views
    assert [g.count for g in cfg.crops] == [2, 3] and cfg.crops[1].solarize_p == 0.1  # preset defaults per group
    crops = Crops(cfg)(_images(4), torch.Generator().manual_seed(0))
    assert [tuple(c.shape) for c in crops] == [(4, 3, 24, 24)] * 2 + [(4, 3, 12, 12)] * 3
    assert not torch.allclose(crops[2], crops[3])  # each crop its own draw
