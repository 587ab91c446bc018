import pytest
import torch

from sslray.models import Projector, SSLModel, build_encoder, projector_dims


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


def test_ssl_model_separates_representation_and_embedding():
    m = SSLModel(build_encoder("small_cnn", width=4), "16-8", num_classes=10)
    h, z1, z2 = m(torch.randn(5, 3, 32, 32), torch.randn(5, 3, 32, 32))
    assert h.shape == (5, 32) and z1.shape == z2.shape == (5, 8)
    assert m.probe.in_features == 32 and m.probe.out_features == 10
