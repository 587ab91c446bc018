import pytest
import torch

from sslray.models import Projector, build_encoder, min_input_size, projector_dims


def test_cifar_stem_keeps_resolution_and_imagenet_stem_downsamples():
    cifar = build_encoder("resnet18", "cifar")
    imnet = build_encoder("resnet18", "imagenet")
    assert cifar.conv1.kernel_size == (3, 3) and cifar.conv1.stride == (1, 1)
    assert isinstance(cifar.maxpool, torch.nn.Identity)
    assert imnet.conv1.kernel_size == (7, 7) and isinstance(imnet.maxpool, torch.nn.MaxPool2d)
    x = torch.randn(2, 3, 32, 32)
    assert cifar.layer1(cifar.relu(cifar.bn1(cifar.conv1(x)))).shape[-1] == 32
    assert cifar(x).shape == (2, 512) and cifar.out_dim == 512
    assert build_encoder("resnet18", "auto", image_size=32).conv1.kernel_size == (3, 3)
    assert build_encoder("resnet18", "auto", image_size=96).conv1.kernel_size == (7, 7)
    assert build_encoder("resnet50", "cifar").out_dim == 2048


def test_small_cnn_shapes():
    enc = build_encoder("small_cnn", width=8)
    assert enc(torch.randn(3, 3, 32, 32)).shape == (3, 64) and enc.out_dim == 64
    assert sum(isinstance(m, torch.nn.Conv2d) for m in enc.modules()) == 5


def test_projector_spec():
    p = Projector(64, "128-128-32")
    kinds = [type(m).__name__ for m in p]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert p.out_dim == 32 and p(torch.randn(4, 64)).shape == (4, 32)
    assert [type(m).__name__ for m in Projector(8, "16")] == ["Linear"]
    for bad in ["", "a-b", "128-0", "128--2"]:
        with pytest.raises(ValueError, match="2048-2048-2048"):
            projector_dims(bad)


def test_a_method_separates_representation_and_embedding():
    from sslray.methods import METHODS

    m = METHODS["vicreg"](build_encoder("small_cnn", width=4), "16-8", num_classes=10)
    out = m([torch.randn(5, 3, 32, 32), torch.randn(5, 3, 32, 32)])
    assert out.rep.shape == (5, 32) and set(out.terms) == {"inv", "var", "cov"}
    assert m.probe.in_features == 32 and m.probe.out_features == 10 and m.projector.out_dim == 8


def test_the_encoder_runs_once_per_crop_size():
    from sslray.methods.base import run_by_size

    calls = []
    enc = build_encoder("small_cnn", width=4)
    enc.register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape))
    crops = [torch.randn(3, 3, 32, 32), torch.randn(3, 3, 32, 32)] + [torch.randn(3, 3, 16, 16) for _ in range(4)]
    reps = run_by_size(enc.eval(), crops)
    assert [tuple(c) for c in calls] == [(6, 3, 32, 32), (12, 3, 16, 16)]  # two forwards: one per size
    for c, r in zip(crops, reps):  # each crop's representation, in crop order
        torch.testing.assert_close(r, enc(c), rtol=1e-5, atol=1e-6)


def _strided_inputs(enc, size):
    """The encoder's output at ``size`` px and the side length every stride-2 layer receives."""
    seen = []
    strided = [m for m in enc.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.MaxPool2d))
               and m.stride in (2, (2, 2))]
    handles = [m.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape[-1])) for m in strided]
    try:
        with torch.no_grad():
            out = enc(torch.randn(2, 3, size, size))
    finally:
        for h in handles:
            h.remove()
    return out, seen


@pytest.mark.parametrize("encoder, stem, below", [
    ("small_cnn", "auto", "fails"),  # 15 px: the fourth 2x2 max-pool gets a 1 x 1 map
    ("resnet18", "cifar", "degenerates"),  # never fails (padded convs): layer4 gets a 1 x 1 map
    ("resnet18", "imagenet", "degenerates"),
    ("resnet50", "cifar", "degenerates"),
    ("resnet50", "imagenet", "degenerates"),
])
def test_min_input_size_is_the_real_minimum(encoder, stem, below):
    n = min_input_size(encoder, stem, 32)
    enc = build_encoder(encoder, stem, n, width=4).eval()
    out, seen = _strided_inputs(enc, n)
    assert out.shape == (2, enc.out_dim) and torch.isfinite(out).all()
    assert len(seen) >= 4 and min(seen) >= 2  # every downsampling still has 2 x 2 to work on
    if below == "fails":
        with pytest.raises(RuntimeError):
            _strided_inputs(enc, n - 1)
    else:
        out, seen = _strided_inputs(enc, n - 1)
        assert out.shape == (2, enc.out_dim) and min(seen) == 1  # a stride-2 layer fed one pixel


def test_min_input_size_values_and_auto_stem():
    assert min_input_size("small_cnn") == 16
    assert min_input_size("resnet18", "cifar") == 5  # below views.size's own floor of 8: never binding
    assert min_input_size("resnet50", "imagenet") == 17
    assert min_input_size("resnet18", "auto", 32) == 5 and min_input_size("resnet18", "auto", 96) == 17


def test_architecture_includes_the_methods_own_shapes():
    """A resume or an evaluation must keep what sizes the method's state dict: its name and, for
    BYOL, the predictor's width (else load_state_dict fails after the data is read)."""
    from sslray.config import load_config
    from sslray.checkpoint import architecture

    byol = architecture(load_config(None, ["loss.name=byol", "loss.params.pred_hidden=512"]))
    assert byol["loss.name"] == "byol" and byol["loss.params.pred_hidden"] == 512
    assert architecture(load_config(None, ["loss.name=moco"]))["loss.params.queue_size"] == 32768
    assert "loss.params.lam" not in architecture(load_config(None))  # weights do not shape anything
