"""What every data module shares: the error for bad data and the decoded dataset (see :mod:`sslray.data`)."""
from __future__ import annotations

from dataclasses import dataclass

import torch


class DataError(ValueError):
    """Bad or missing data: the message names the file and the offending rows / paths."""


@dataclass
class ImageData:
    images: torch.Tensor  # uint8 [N, 3, H, W]
    labels: torch.Tensor  # int64 [N]
    classes: list[str]

    def __len__(self) -> int:
        return self.images.shape[0]
