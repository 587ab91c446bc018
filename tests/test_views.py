"""The batched two-view pipeline against torchvision's per-image transforms."""
import math

import pytest
import torch
import torchvision.transforms.v2 as T
import torchvision.transforms.v2.functional as TF

from sslray import views_ops as ops
from sslray.config import CropGroup, ViewConfig, ViewsConfig, load_config
from sslray.views import Crops, apply_view, blur_kernel_size, eval_view, normaliser, sample_crop_boxes, sample_view_params
from sslray.views_resample import crop_resize_flip, resize_weights


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
    ours = crop_resize_flip(x, boxes, flip, 32)
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


# ---------------------------------------------------------------- the fast paths (issue 12 s. 4)

def _boxes(n, H, W, seed, scale=(0.05, 1.0)):
    g = torch.Generator().manual_seed(seed)
    return sample_crop_boxes(ViewConfig(crop_scale=scale), n, H, W, g), torch.rand(n, generator=g) < 0.5


@pytest.mark.parametrize("H, W, size", [(32, 32, 32), (64, 48, 24), (96, 96, 64), (32, 32, 40), (17, 29, 8)])
def test_matmul_resize_matches_torchvision_antialiased_resized_crop(H, W, size):
    """Crop + resize + flip as Ry @ X @ Rx^T equals TF.resized_crop(antialias=True) (+ flip), for
    upscaled crops and for downscaled ones, where the antialiasing filter widens."""
    x = torch.randint(0, 256, (48, 3, H, W), dtype=torch.uint8, generator=torch.Generator().manual_seed(H)).float() / 255
    boxes, flip = _boxes(48, H, W, seed=size)
    ours = crop_resize_flip(x, boxes, flip, size)
    for k in range(48):
        i, j, h, w = boxes[k].int().tolist()
        ref = TF.resized_crop(x[k], i, j, h, w, [size, size], antialias=True)
        torch.testing.assert_close(ours[k], ref.flip(-1) if flip[k] else ref, atol=1e-6, rtol=0)


def test_resize_weights_are_normalised_and_stay_inside_the_box():
    boxes, flip = _boxes(64, 40, 40, seed=0)
    w = resize_weights(boxes[:, 1], boxes[:, 3], 40, 16, flip)
    torch.testing.assert_close(w.sum(-1), torch.ones(64, 16))
    cols = torch.arange(40).view(1, 1, -1)
    outside = (cols < boxes[:, 1].view(-1, 1, 1)) | (cols >= (boxes[:, 1] + boxes[:, 3]).view(-1, 1, 1))
    assert (w[outside.expand_as(w)] == 0).all()


def test_hue_matches_torchvision_over_the_whole_wheel_and_on_ties():
    """The trapezoid hue formula against torchvision's HSV round trip: factors over [-0.5, 0.5],
    images quantised to 5 levels (many tied channels: greys, two-way maxima)."""
    x = _images(64, seed=7).float() / 255
    x[:32] = (x[:32] * 4).round() / 4
    f = torch.linspace(-0.5, 0.5, 64)
    theirs = torch.stack([TF.adjust_hue(img, float(v)) for img, v in zip(x, f)])
    torch.testing.assert_close(ops.hue(x, f), theirs, atol=2e-5, rtol=0)
    out = x.clone()
    assert ops.hue(out, f, out=out) is out  # in place, as the pipeline uses it
    torch.testing.assert_close(out, theirs, atol=2e-5, rtol=0)


def test_blend_jitter_is_each_colour_op_per_image():
    """One blend with per-image coefficients = brightness / contrast / saturation / grayscale /
    identity, image by image."""
    x = _images(5, seed=8).float() / 255
    scale = torch.tensor([1.3, 0.7, 0.6, 0.0, 1.0])
    mean_w = torch.tensor([0.0, 0.3, 0.0, 0.0, 0.0])
    gray_w = torch.tensor([0.0, 0.0, 0.4, 1.0, 0.0])
    ours = ops.blend_jitter(x.clone(), scale, mean_w, gray_w)
    refs = [TF.adjust_brightness(x[0], 1.3), TF.adjust_contrast(x[1], 0.7), TF.adjust_saturation(x[2], 0.6),
            TF.rgb_to_grayscale(x[3], num_output_channels=3), x[4]]
    for k, ref in enumerate(refs):
        torch.testing.assert_close(ours[k], ref, atol=2e-5, rtol=0)
    assert torch.equal(ours[4], x[4])  # identity is exact


def test_solarize_at_a_threshold_on_pixel_values():
    x = torch.arange(256, dtype=torch.float32).view(1, 1, 16, 16).expand(2, 3, 16, 16) / 255
    for t in (0.5, 128 / 255, 0.25):
        assert torch.equal(ops.solarize(x, t), TF.solarize(x, t))


def _reference_view(x, p, cfg, size):
    """torchvision's per-image functionals, driven by our sampled parameters."""
    k = blur_kernel_size(size)
    jitter = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    out = []
    for n, img in enumerate(x):
        i, j, h, w = p["boxes"][n].int().tolist()
        y = TF.resized_crop(img, i, j, h, w, [size, size], antialias=True)
        y = TF.horizontal_flip(y) if p["flip"][n] else y
        if cfg.jitter_p > 0 and p["jitter"][n]:
            for op in p["order"][n].tolist():
                y = jitter[op](y, float(p["factors"][n, op]))
        if cfg.grayscale_p > 0 and p["gray"][n]:
            y = TF.rgb_to_grayscale(y, num_output_channels=3)
        if cfg.blur_p > 0 and p["blur"][n]:
            y = TF.gaussian_blur(y, [k, k], [float(p["sigma"][n])] * 2)
        if cfg.solarize_p > 0 and p["solarize"][n]:
            y = TF.solarize(y, cfg.solarize_threshold)
        out.append(y)
    return torch.stack(out)


_MIXED = ViewConfig(crop_scale=(0.08, 1.0), hue=0.5, blur_p=0.5, solarize_p=0.3)
_ALWAYS = ViewConfig(jitter_p=1.0, grayscale_p=1.0, blur_p=1.0, solarize_p=1.0, solarize_threshold=0.4)


@pytest.mark.parametrize("vc, H, size", [(_MIXED, 32, 32), (_MIXED, 48, 24), (_MIXED, 32, 40), (_ALWAYS, 32, 32),
                                         (load_config({"views": {"preset": "asymmetric"}}).views.crops[1], 32, 32)])
def test_view_matches_torchvision_per_image_pipeline(vc, H, size):
    """The whole view (300 images: several CPU chunks, every op on a subset or on all rows) equals
    torchvision's per-image functionals applied with the same parameters."""
    x = _images(300, size=H, seed=H + size).float() / 255
    p = sample_view_params(vc, 300, H, H, torch.Generator().manual_seed(size))
    torch.testing.assert_close(apply_view(x, p, vc, size), _reference_view(x, p, vc, size), atol=1e-5, rtol=0)


@pytest.mark.parametrize("vc", [_MIXED, _ALWAYS, ViewConfig(jitter_p=0.0, grayscale_p=0.0)])
def test_sync_free_path_equals_the_cpu_path(vc):
    """The CUDA way (whole batch + torch.where) run on the CPU gives the CPU way's images."""
    x = _images(200, seed=4).float() / 255
    p = sample_view_params(vc, 200, 32, 32, torch.Generator().manual_seed(5))
    torch.testing.assert_close(apply_view(x, p, vc, 28, sync_free=True), apply_view(x, p, vc, 28, sync_free=False),
                               atol=1e-6, rtol=0)


def test_sync_free_path_reads_no_tensor_data_on_the_host():
    """On the meta device tensors have no data: nonzero, item, tolist, a boolean-mask index or a
    Python branch on a value all raise there. The sync-free way runs through; the CPU way (which
    uses nonzero) does not -- so this test would catch a data-dependent step."""
    vc = _MIXED
    p = {k: v.to("meta") for k, v in sample_view_params(vc, 64, 32, 32, torch.Generator().manual_seed(1)).items()}
    x = torch.empty(64, 3, 32, 32, device="meta")
    scale, shift = normaliser(ViewsConfig(), "meta")
    out = apply_view(x, p, vc, 24, sync_free=True, normalise=(scale, shift))
    assert out.shape == (64, 3, 24, 24) and out.device.type == "meta"
    with pytest.raises((NotImplementedError, RuntimeError)):
        apply_view(x, p, vc, 24, sync_free=False)


def test_chunking_does_not_change_the_views(monkeypatch):
    import sslray.views as views

    x = _images(300, seed=6)
    cfg = load_config({"views": {"preset": "asymmetric"}}).views
    ref = Crops(cfg)(x, torch.Generator().manual_seed(0))
    for floats in (7 * 3 * 32 * 32, 10**9):  # 7-image chunks; the whole batch at once
        monkeypatch.setattr(views, "_CPU_CHUNK_FLOATS", floats)
        for a, b in zip(Crops(cfg)(x, torch.Generator().manual_seed(0)), ref):
            assert torch.equal(a, b)
