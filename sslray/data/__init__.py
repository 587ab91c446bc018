"""Datasets, decoded once into one uint8 tensor in memory.

Sources: ``cifar10``, ``cifar100``, ``stl10`` (torchvision), ``imagefolder``, ``parquet`` (a
file, a folder of shards, or a pyarrow-filesystem URI) and ``synthetic`` (generated, seeded: for
tests and smoke runs only). Small datasets fit in memory as uint8 -- CIFAR-10's training split is
50000 x 3 x 32 x 32 B = 153 MB -- and the training loop moves the tensor to the GPU once, so no
data loader workers or host-to-device copies sit in the step.

``load_split`` checks everything before returning: corrupt images and out-of-range labels are
reported by row / path in one :class:`DataError`, never as a crash deep in a worker.
"""
from __future__ import annotations

from sslray.data.base import DataError, ImageData
from sslray.data.sources import check_available, load_split
from sslray.data.subset import stratified_subset

SOURCES: tuple[str, ...] = ("cifar10", "cifar100", "stl10", "imagefolder", "parquet", "synthetic")

__all__ = ["DataError", "ImageData", "SOURCES", "check_available", "load_split", "stratified_subset"]
