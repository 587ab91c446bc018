"""The networks of the two stages, made of a pretrained method's own parts.

- The fine-tuned teacher (:class:`FineTuned`): the pretrained encoder, the projector's first
  Linear-BN-ReLU block and a new linear classifier. SimCLRv2 keeps part of its 3-layer projection
  head instead of discarding it, and fine-tunes from the head's first layer when 1 % or 10 % of
  the labels are available; the head's later layers are not used. A projector that is a
  single Linear has no such block: the classifier then sits on the encoder's output. The classifier
  starts at zero, as the official code's fine-tuning does (``zero_init_logits_layer``).
- The student (:func:`build_student`): a freshly initialised method of the student's config, of
  which only the encoder and the ``probe`` -- a Linear from the representation to the classes --
  are trained: SimCLRv2's student is the teacher's architecture without the projection head, or a
  smaller network. Training the probe as the student's classifier keeps the student an ordinary sslray
  method, so its checkpoint loads wherever a pretraining checkpoint does; its projector (and any
  other network the method owns) stays at its initialisation.
"""
from __future__ import annotations

import torch
from torch import nn

from sslray.methods.base import Method


def first_projector_block(projector: nn.Module) -> nn.Sequential | None:
    """The projector's first Linear-BN-ReLU block, sharing its modules (training it changes the
    projector's weights); None when the projector is one plain Linear."""
    layers = list(projector.children())
    if len(layers) > 3 and isinstance(layers[0], nn.Linear) and isinstance(layers[1], nn.BatchNorm1d) \
            and isinstance(layers[2], nn.ReLU):
        return nn.Sequential(*layers[:3])
    return None


class FineTuned(nn.Module):
    """encoder -> projector's first block (or nothing) -> linear classifier; returns logits."""

    def __init__(self, method: Method, num_classes: int):
        super().__init__()
        self.encoder = method.encoder
        block = first_projector_block(method.projector)
        self.head = block if block is not None else nn.Identity()
        self.from_layer = "projector.0" if block is not None else "encoder"  # for the record
        width = block[0].out_features if block is not None else method.encoder.out_dim
        self.classifier = nn.Linear(width, num_classes)
        nn.init.zeros_(self.classifier.weight)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.head(self.encoder(x)))

    def logits_head(self) -> nn.Sequential:
        """Representation -> logits: what :func:`sslray.eval.extract_features` takes as ``projector``."""
        return nn.Sequential(self.head, self.classifier)


def build_student(cfg, num_classes: int, seed: int) -> tuple[Method, nn.Sequential]:
    """(the student method, initialised from ``seed``; the network trained: its encoder followed by
    its probe)."""
    from sslray.methods import build_method

    torch.manual_seed(seed)
    method = build_method(cfg, num_classes)
    return method, nn.Sequential(method.encoder, method.probe)
