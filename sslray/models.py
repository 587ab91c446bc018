"""Encoders and the projector (methods own them: sslray.methods).

The encoder output is the *representation* (what kNN / linear probes and downstream users see);
the projector output is the *embedding* the SSL loss sees. They are kept separate on purpose:
every method here evaluates the representation, never the embedding.

- ``resnet18`` / ``resnet50``: torchvision's ResNets, randomly initialised. The CIFAR stem (3x3
  stride-1 conv, no max-pool) keeps 32 px images at 32x32 into layer1; the ImageNet stem (7x7
  stride-2 conv + max-pool) is for large images. ``stem: auto`` picks CIFAR for images <= 64 px.
  Using the ImageNet stem on CIFAR is the classic reason for results far below published figures.
- ``small_cnn``: five 3x3 conv-BN-ReLU layers, for CPU runs (~17 M MACs per 32 px image at width
  32, vs ~555 M for a CIFAR ResNet-18).
"""
from __future__ import annotations

from torch import nn

ENCODERS = ("resnet18", "resnet50", "small_cnn")


def projector_dims(spec: str) -> list[int]:
    """Parse ``"2048-2048-2048"`` into widths; raises ValueError with the expected format."""
    try:
        dims = [int(p) for p in str(spec).split("-")]
    except ValueError:
        raise ValueError(f"{spec!r} is not a projector spec; allowed: widths joined by '-', "
                         "e.g. '2048-2048-2048'") from None
    if not dims or any(d < 1 for d in dims):
        raise ValueError(f"{spec!r} has a width below 1; allowed: positive widths, e.g. '2048-2048-2048'")
    return dims


class Projector(nn.Sequential):
    """Linear-BN-ReLU blocks and a plain last Linear (VICReg / Barlow Twins / SimCLR / BYOL style);
    ``last_bn``: a BatchNorm without affine parameters after the last Linear (SimSiam)."""

    def __init__(self, in_dim: int, spec: str, last_bn: bool = False):
        dims = [in_dim] + projector_dims(spec)
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-2], dims[1:-1]):
            layers += [nn.Linear(a, b, bias=False), nn.BatchNorm1d(b), nn.ReLU(inplace=True)]
        layers.append(nn.Linear(dims[-2], dims[-1], bias=False))
        if last_bn:
            layers.append(nn.BatchNorm1d(dims[-1], affine=False))
        super().__init__(*layers)
        self.out_dim = dims[-1]


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class SmallCNN(nn.Sequential):
    """Five conv layers, widths w, 2w, 4w, 8w, 8w, max-pooling after the first four."""

    def __init__(self, width: int = 32):
        w = width
        super().__init__(
            *_conv_bn_relu(3, w), nn.MaxPool2d(2),
            *_conv_bn_relu(w, 2 * w), nn.MaxPool2d(2),
            *_conv_bn_relu(2 * w, 4 * w), nn.MaxPool2d(2),
            *_conv_bn_relu(4 * w, 8 * w), nn.MaxPool2d(2),
            *_conv_bn_relu(8 * w, 8 * w),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.out_dim = 8 * w


def resolve_stem(encoder: str, stem: str, image_size: int) -> str | None:
    """The stem a ResNet gets for ``image_size`` px views: cifar or imagenet (auto: cifar up to
    64 px); None for small_cnn, which has no stem choice."""
    if encoder not in ENCODERS:
        raise ValueError(f"model.encoder: unknown encoder {encoder!r}; allowed: {', '.join(ENCODERS)}")
    if encoder == "small_cnn":
        return None
    return "cifar" if stem == "cifar" or (stem == "auto" and image_size <= 64) else "imagenet"


def _downsamplings(encoder: str, stem: str, image_size: int) -> list[bool]:
    """The encoder's stride-2 steps, input to output; True where the step rounds the size up
    (padded stride-2 convolutions and the ImageNet stem's padded max-pool: ceil(n / 2)), False
    where it rounds down (SmallCNN's MaxPool2d(2): floor(n / 2))."""
    kind = resolve_stem(encoder, stem, image_size)
    if kind is None:
        return [False] * 4  # SmallCNN: a 2x2 max-pool after each of the first four convs
    stages = [True] * 3  # ResNet layer2, layer3, layer4 start with a stride-2 conv (and 1x1 shortcut)
    return ([True, True] if kind == "imagenet" else []) + stages  # 7x7/2 conv, 3x3/2 max-pool


def min_input_size(encoder: str, stem: str = "auto", image_size: int = 32) -> int:
    """The smallest view side length the encoder handles: every stride-2 step must still get at
    least 2 x 2 pixels. Below it SmallCNN fails (a 1 x 1 map cannot be max-pooled by 2) and a ResNet
    degenerates: its last stages get 1 x 1 maps, with nothing left to downsample, and their 3x3
    convolutions see mostly padding. ``image_size`` (the view size) resolves ``stem: auto``."""
    steps = _downsamplings(encoder, stem, image_size)
    size = 1
    while not _every_step_gets_two(size, steps):
        size += 1
    return size


def _every_step_gets_two(size: int, steps: list[bool]) -> bool:
    for round_up in steps:
        if size < 2:
            return False
        size = (size + 1) // 2 if round_up else size // 2
    return True


def build_encoder(name: str, stem: str = "auto", image_size: int = 32, width: int = 32) -> nn.Module:
    """An encoder with attribute ``out_dim`` (the representation width)."""
    kind = resolve_stem(name, stem, image_size)
    if kind is None:
        return SmallCNN(width)
    import torchvision  # here, not at the top: importing it takes ~1.7 s, and validating a config
    # (every CLI, every search-space probe) needs this module but never a ResNet

    net = getattr(torchvision.models, name)(weights=None)
    if kind == "cifar":
        net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    net.out_dim = net.fc.in_features
    net.fc = nn.Identity()
    return net
