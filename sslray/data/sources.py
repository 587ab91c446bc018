"""One loader per source, a cache of decoded arrays, and ``load_split``."""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
from pathlib import Path

import numpy as np
import torch

from sslray.data.base import DataError, ImageData
from sslray.data.decode import check_labels, decode_images, read_parquet
from sslray.data.subset import stratified_subset
from sslray.data.synthetic import synthetic_split

_TV = {  # torchvision's extracted layouts of the CIFAR archives
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{k}" for k in range(1, 6)], ["test_batch"],
                "batches.meta", b"label_names", b"labels", 10),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "meta", b"fine_label_names", b"fine_labels", 100),
}
KNOWN_CLASSES = {"cifar10": 10, "cifar100": 100, "stl10": 10}


def _to_tensor(images_nhwc: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images_nhwc.transpose(0, 3, 1, 2)))


# ------------------------------------------------------------------------------- file sources
def _parquet(location: str, cfg, where: str) -> ImageData:
    blobs, labels, names, classes = read_parquet(location, cfg.image_column, cfg.label_column)
    n_cls = cfg.num_classes or (len(classes) if classes else None)
    check_labels(labels, n_cls, lambda k: names[k], where)
    images = decode_images(blobs, names, cfg.image_size, where)
    if classes is None:
        classes = [str(c) for c in range(n_cls or int(labels.max()) + 1)]
    return ImageData(_to_tensor(images), torch.from_numpy(labels.astype(np.int64)), classes)


def _imagefolder(location: str, cfg, where: str) -> ImageData:
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    if not os.path.isdir(location):
        raise DataError(f"{where}: {location} is not a folder of class subfolders (ImageFolder layout)")
    try:
        classes, index = find_classes(location)
        samples = make_dataset(location, index, extensions=IMG_EXTENSIONS)
    except (FileNotFoundError, OSError) as e:
        raise DataError(f"{where}: {e}") from None
    paths = [p for p, _ in samples]
    labels = np.array([y for _, y in samples], dtype=np.int64)
    images = decode_images(paths, paths, cfg.image_size, where)
    return ImageData(_to_tensor(images), torch.from_numpy(labels), classes)


def _cifar_torchvision(folder: Path, name: str, split: str) -> ImageData:
    """Read torchvision's extracted CIFAR pickles directly (raw uint8 arrays, no decode)."""
    _, train_files, test_files, meta_file, names_key, labels_key, _ = _TV[name]
    data, labels = [], []
    for f in train_files if split == "train" else test_files:
        with open(folder / f, "rb") as fh:
            d = pickle.load(fh, encoding="bytes")
        data.append(np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.extend(d[labels_key])
    with open(folder / meta_file, "rb") as fh:
        classes = [c.decode() for c in pickle.load(fh, encoding="bytes")[names_key]]
    return ImageData(torch.from_numpy(np.concatenate(data)), torch.tensor(labels, dtype=torch.int64), classes)


def _cifar(cfg, name: str, split: str) -> ImageData | str:
    """A CIFAR split from a local copy, else torchvision's download. Returns a parquet location
    to read (so the cache can key on it) or the data itself."""
    root = Path(cfg.root)
    pq = root / name / f"{split}.parquet"
    if pq.exists():
        return str(pq)
    folder = root / _TV[name][0]
    if not (folder / _TV[name][3]).exists() and cfg.download:
        import torchvision

        cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
        try:
            cls(str(root), train=split == "train", download=True)
        except Exception as e:  # offline: URLError, timeouts, ... -- all mean "no copy"
            raise DataError(_where_to_put(name, root, f"the download failed ({type(e).__name__}: {e})")) from None
    if not (folder / _TV[name][3]).exists():
        raise DataError(_where_to_put(name, root, "data.download is false"))
    return _cifar_torchvision(folder, name, split)


def check_available(cfg) -> None:
    """Raise DataError unless both splits can be read where this process runs: a local copy of
    CIFAR (fetched now when data.download allows, as the first trial would), or local train/test
    paths. Cheap: nothing is decoded. URIs (s3://, ...) and stl10 are left to the loader."""
    src = cfg.source
    if src in ("cifar10", "cifar100"):
        for split in ("train", "test"):
            root = Path(cfg.root)
            if not (root / src / f"{split}.parquet").exists() and not (root / _TV[src][0] / _TV[src][3]).exists():
                _cifar(cfg, src, split)  # downloads, or raises DataError naming data.root
        return
    if src in ("parquet", "imagefolder"):
        for field in ("train_path", "test_path"):
            location = getattr(cfg, field)
            if not location:
                raise DataError(f"data.{field}: required for data.source={src}; allowed: a file, folder or URI")
            if "://" not in location and not Path(location).exists():
                raise DataError(f"data.{field}: {location} does not exist; allowed: a file, folder or URI")


def _where_to_put(name: str, root: Path, why: str) -> str:
    return (f"data.root: no local copy of {name} under {root} and {why}; allowed: a folder holding "
            f"{name}/{{train,test}}.parquet (columns image = encoded bytes, label) or torchvision's extracted "
            f"{_TV[name][0]}/ (as {root / name}/ or {root / _TV[name][0]}/)")


def _stl10(cfg, split: str) -> ImageData:
    import torchvision

    try:
        ds = torchvision.datasets.STL10(cfg.root, split=split, download=cfg.download)
    except Exception as e:
        raise DataError(f"stl10: no usable copy under data.root={cfg.root} ({type(e).__name__}: {e}); "
                        f"put torchvision's extracted stl10_binary/ there") from None
    return ImageData(torch.from_numpy(np.ascontiguousarray(ds.data)), torch.from_numpy(ds.labels.astype(np.int64)),
                     list(ds.classes))


# --------------------------------------------------------------------------------------- cache
def _cache_key(location: str, cfg) -> str | None:
    if "://" in location:
        return None
    p = Path(location)
    files = sorted(p.rglob("*")) if p.is_dir() else [p]
    stats = [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.is_file()]
    raw = json.dumps([stats, cfg.image_size, cfg.image_column, cfg.label_column, cfg.num_classes])
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


def _cached(location: str, cfg, loader) -> ImageData:
    key = _cache_key(location, cfg) if cfg.cache_dir else None
    if key is None:
        return loader()
    path = Path(cfg.cache_dir) / f"{key}.pt"
    if path.exists():
        d = torch.load(path, weights_only=True)
        return ImageData(d["images"], d["labels"], d["classes"])
    data = loader()
    try:  # a cache only saves time: a read-only or full disk (another node's) must not fail the run
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    except OSError:
        return data
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"images": data.images, "labels": data.labels, "classes": data.classes}, f)
        os.replace(tmp, path)  # atomic: a crash never leaves a half-written cache entry
    except OSError:
        Path(tmp).unlink(missing_ok=True)
    return data


# ------------------------------------------------------------------------------------ load_split
def _load_full(cfg, split: str, seed: int) -> ImageData:
    src = cfg.source
    if src == "synthetic":
        n = cfg.synthetic_train_size if split == "train" else cfg.synthetic_test_size
        return synthetic_split(n, cfg.synthetic_classes, cfg.synthetic_image_size, seed, split)
    if src == "stl10":
        return _stl10(cfg, split)
    if src in ("cifar10", "cifar100"):
        location = _cifar(cfg, src, split)
        if isinstance(location, ImageData):
            return location
        reader = _parquet
    else:
        location = cfg.train_path if split == "train" else cfg.test_path
        if not location:
            raise DataError(f"data.test_path: required to evaluate data.source={src} (a file, folder or URI)")
        reader = _parquet if src == "parquet" else _imagefolder
    where = f"{src} {split} split ({location})"
    return _cached(location, cfg, lambda: reader(location, cfg, where))


def load_split(cfg, split: str, seed: int = 0) -> ImageData:
    """The ``train`` or ``test`` split of ``cfg`` (a DataConfig), subset and checked."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    data = _load_full(cfg, split, seed)
    n_cls = cfg.num_classes or KNOWN_CLASSES.get(cfg.source)
    check_labels(data.labels.numpy(), n_cls, lambda k: f"row {k}", f"{cfg.source} {split} split")
    if n_cls and len(data.classes) < n_cls:
        data.classes = data.classes + [str(c) for c in range(len(data.classes), n_cls)]
    if data.images.shape[1] != 3:
        raise DataError(f"{cfg.source} {split} split: expected 3-channel images, got shape {tuple(data.images.shape)}")
    n = cfg.test_limit if split == "test" else (
        cfg.limit if cfg.limit is not None else (round(cfg.fraction * len(data)) if cfg.fraction is not None else None))
    if n is not None and n < len(data):
        idx = stratified_subset(data.labels, n, seed)
        data = ImageData(data.images[idx].contiguous(), data.labels[idx], data.classes)
    if len(data) == 0:
        raise DataError(f"{cfg.source} {split} split is empty")
    return data
