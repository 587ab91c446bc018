"""Image decoding (PIL, a small thread pool) and parquet reading (pyarrow)."""
from __future__ import annotations

import io
import json
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
from PIL import Image

from sslray.data.base import DataError

_MAX_LISTED = 10


def _describe(bad: list[str]) -> str:
    more = f" (and {len(bad) - _MAX_LISTED} more)" if len(bad) > _MAX_LISTED else ""
    return ", ".join(bad[:_MAX_LISTED]) + more


def _decode_one(blob, size: int | None) -> np.ndarray:
    with Image.open(io.BytesIO(blob) if isinstance(blob, (bytes, bytearray, memoryview)) else blob) as im:
        im = im.convert("RGB")
        if size is not None and im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR)
        return np.asarray(im, dtype=np.uint8)


def decode_images(items: list, names: list[str], size: int | None, where: str) -> np.ndarray:
    """uint8 [N, H, W, 3] from encoded bytes or file paths; every failure reported by name.

    PIL releases the GIL while decoding, so threads use every core without pickling images
    between processes (CIFAR-10's 50000 JPEGs: a few seconds on 2 cores)."""
    def work(k):
        try:
            return _decode_one(items[k], size)
        except Exception as e:  # any decoder error is a data error of that row
            return f"{names[k]} ({type(e).__name__})"

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        out = list(pool.map(work, range(len(items)), chunksize=256))
    bad = [o for o in out if isinstance(o, str)]
    if bad:
        raise DataError(f"{where}: {len(bad)} image(s) could not be decoded: {_describe(bad)}")
    shapes = sorted({o.shape for o in out})
    if len(shapes) > 1:
        raise DataError(f"{where}: images differ in size ({_describe([f'{s[1]}x{s[0]}' for s in shapes])}); "
                        "set data.image_size to resize them to one square size")
    if not out:
        raise DataError(f"{where}: no images")
    return np.stack(out)


def _dataset(location: str) -> pads.Dataset:
    try:
        if "://" in location:
            fs, path = pafs.FileSystem.from_uri(location)
            return pads.dataset(path, filesystem=fs, format="parquet")
        if not os.path.exists(location):
            raise DataError(f"parquet data not found: {location} (a .parquet file, a folder of shards or a URI)")
        return pads.dataset(location, format="parquet")
    except DataError:
        raise
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"{location}: cannot read parquet: {e}") from None


def read_parquet(location: str, image_col: str, label_col: str) -> tuple[list, np.ndarray, list[str], list[str] | None]:
    """(encoded images, labels, row names, class names or None) of a parquet file / folder / URI."""
    ds = _dataset(location)
    names = ds.schema.names
    for col, field in ((image_col, "data.image_column"), (label_col, "data.label_column")):
        if col not in names:
            raise DataError(f"{location}: no column {col!r} ({field}); columns present: {', '.join(names)}")
    cols = [image_col, label_col] + (["path"] if "path" in names and "path" not in (image_col, label_col) else [])
    table = ds.to_table(columns=cols)
    images = table.column(image_col).combine_chunks()
    if pa.types.is_struct(images.type):  # Hugging Face Image feature: {bytes, path}
        if images.type.get_field_index("bytes") < 0:
            raise DataError(f"{location}: column {image_col!r} is a struct without a 'bytes' field")
        images = images.field("bytes")
    elif not (pa.types.is_binary(images.type) or pa.types.is_large_binary(images.type)):
        raise DataError(f"{location}: column {image_col!r} has type {images.type}; expected encoded image bytes "
                        "or a {bytes, path} struct")
    labels_arr = table.column(label_col)
    if not pa.types.is_integer(labels_arr.type):
        raise DataError(f"{location}: label column {label_col!r} has type {labels_arr.type}; expected integers")
    if labels_arr.null_count:
        raise DataError(f"{location}: label column {label_col!r} has {labels_arr.null_count} missing value(s)")
    paths = table.column("path").to_pylist() if "path" in cols else None
    row_names = [f"row {k}" + (f" ({paths[k]})" if paths else "") for k in range(len(table))]
    blobs = images.to_pylist()
    missing = [row_names[k] for k, b in enumerate(blobs) if b is None]
    if missing:
        raise DataError(f"{location}: {len(missing)} row(s) have no image: {_describe(missing)}")
    classes = None
    meta = ds.schema.metadata or {}
    if b"classes" in meta:
        raw = meta[b"classes"].decode()
        try:
            classes = [str(c) for c in json.loads(raw)]
        except json.JSONDecodeError:
            classes = [c.strip() for c in raw.split(",")]
    return blobs, labels_arr.to_numpy(), row_names, classes


def check_labels(labels: np.ndarray, num_classes: int | None, names, where: str) -> None:
    bad = np.nonzero((labels < 0) | ((labels >= num_classes) if num_classes else False))[0]
    if bad.size:
        allowed = f"[0, {num_classes})" if num_classes else ">= 0"
        listed = ", ".join(f"{names(k)} = {int(labels[k])}" for k in bad[:_MAX_LISTED].tolist())
        more = f" (and {bad.size - _MAX_LISTED} more)" if bad.size > _MAX_LISTED else ""
        raise DataError(f"{where}: {bad.size} label(s) out of range (allowed: {allowed}): {listed}{more}")
