"""Data sources: parquet (file, shards, URI, HF struct), imagefolder, CIFAR layouts, synthetic,
subsets, cache, and bad data reported by row / path."""
import io
import json
import pickle
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from conftest import CIFAR, requires_cifar
from sslray.config import load_config
from sslray.data import DataError, load_split, stratified_subset


def _jpeg(rgb, size=8, fmt="JPEG"):
    buf = io.BytesIO()
    Image.new("RGB", (size, size), rgb).save(buf, format=fmt)
    return buf.getvalue()


def _table(n=20, classes=4, hf=False, bad_rows=(), label_offset=0):
    imgs = [b"not an image" if k in bad_rows else _jpeg((10 * k, 5, 200)) for k in range(n)]
    labels = [k % classes + (label_offset if k == 3 else 0) for k in range(n)]
    col = pa.array([{"bytes": b, "path": f"{k}.jpg"} for k, b in enumerate(imgs)]) if hf else pa.array(imgs, pa.binary())
    t = pa.table({"image": col, "label": pa.array(labels, pa.int64()), "path": [f"split/{k}.jpg" for k in range(n)]})
    return t.replace_schema_metadata({"classes": json.dumps([f"c{c}" for c in range(classes)])})


def _cfg(**data):
    return load_config({"data": {"source": "parquet", **data}}).data


def test_parquet_file_shards_and_uri(tmp_path):
    pq.write_table(_table(), tmp_path / "one.parquet")
    shards = tmp_path / "shards"
    shards.mkdir()
    t = _table()
    pq.write_table(t.slice(0, 12), shards / "part-0.parquet")
    pq.write_table(t.slice(12), shards / "part-1.parquet")
    a = load_split(_cfg(train_path=str(tmp_path / "one.parquet")), "train")
    b = load_split(_cfg(train_path=str(shards)), "train")
    c = load_split(_cfg(train_path=f"file://{tmp_path / 'one.parquet'}"), "train")
    assert a.images.shape == (20, 3, 8, 8) and a.images.dtype == torch.uint8
    assert a.classes == ["c0", "c1", "c2", "c3"]
    for other in (b, c):
        assert torch.equal(other.labels, a.labels) and torch.equal(other.images, a.images)
    assert abs(int(a.images[0, 2].float().mean()) - 200) <= 3  # decoded colour


def test_hf_struct_column_and_custom_names(tmp_path):
    t = _table(hf=True).rename_columns(["img", "y", "path"])
    pq.write_table(t, tmp_path / "hf.parquet")
    d = load_split(_cfg(train_path=str(tmp_path / "hf.parquet"), image_column="img", label_column="y"), "train")
    assert len(d) == 20 and d.labels.tolist()[:5] == [0, 1, 2, 3, 0]


def test_missing_column_lists_the_columns(tmp_path):
    pq.write_table(_table(), tmp_path / "t.parquet")
    with pytest.raises(DataError, match="no column 'img'.*data.image_column.*columns present: image, label, path"):
        load_split(_cfg(train_path=str(tmp_path / "t.parquet"), image_column="img"), "train")


def test_corrupt_images_reported_by_row_and_path(tmp_path):
    pq.write_table(_table(bad_rows=(2, 7)), tmp_path / "t.parquet")
    with pytest.raises(DataError) as err:
        load_split(_cfg(train_path=str(tmp_path / "t.parquet")), "train")
    msg = str(err.value)
    assert "2 image(s) could not be decoded" in msg and "row 2 (split/2.jpg)" in msg and "row 7 (split/7.jpg)" in msg


def test_out_of_range_labels_reported(tmp_path):
    pq.write_table(_table(label_offset=10), tmp_path / "t.parquet")
    with pytest.raises(DataError, match=r"1 label\(s\) out of range \(allowed: \[0, 4\)\): row 3 \(split/3.jpg\) = 13"):
        load_split(_cfg(train_path=str(tmp_path / "t.parquet")), "train")
    with pytest.raises(DataError, match=r"allowed: \[0, 2\)"):
        load_split(_cfg(train_path=str(tmp_path / "t.parquet"), num_classes=2), "train")


def test_missing_parquet_and_missing_test_path(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_split(_cfg(train_path=str(tmp_path / "nope.parquet")), "train")
    pq.write_table(_table(), tmp_path / "t.parquet")
    with pytest.raises(DataError, match="data.test_path"):
        load_split(_cfg(train_path=str(tmp_path / "t.parquet")), "test")


def test_imagefolder_sizes_and_resize(tmp_path):
    for cls, rgb in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
        (tmp_path / cls).mkdir()
        for k, size in enumerate((8, 8, 12)):
            (tmp_path / cls / f"{k}.png").write_bytes(_jpeg(rgb, size, "PNG"))
    cfg = load_config({"data": {"source": "imagefolder", "train_path": str(tmp_path)}}).data
    with pytest.raises(DataError, match="differ in size.*data.image_size"):
        load_split(cfg, "train")
    cfg.image_size = 10
    d = load_split(cfg, "train")
    assert d.images.shape == (6, 3, 10, 10) and d.classes == ["cat", "dog"] and d.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert d.images[0, 0].float().mean() > 250 and d.images[5, 2].float().mean() > 250


def _write_torchvision_cifar(root, n_per_batch=6):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        d = {b"data": rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8),
             b"labels": [int(x) for x in rng.integers(0, 10, n_per_batch)]}
        (folder / name).write_bytes(pickle.dumps(d))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [f"n{k}".encode() for k in range(10)]}))
    return folder


def test_cifar_from_torchvision_layout(tmp_path):
    folder = _write_torchvision_cifar(tmp_path)
    cfg = load_config({"data": {"source": "cifar10", "root": str(tmp_path), "download": False}}).data
    tr, te = load_split(cfg, "train"), load_split(cfg, "test")
    assert tr.images.shape == (30, 3, 32, 32) and te.images.shape == (6, 3, 32, 32)
    first = pickle.loads((folder / "data_batch_1").read_bytes())
    assert torch.equal(tr.images[0].flatten(), torch.from_numpy(first[b"data"][0]))
    assert tr.labels[:6].tolist() == first[b"labels"] and tr.classes[0] == "n0"


def test_cifar_from_parquet_layout(tmp_path):
    (tmp_path / "cifar10").mkdir()
    for split in ("train", "test"):
        pq.write_table(_table(n=20, classes=10), tmp_path / "cifar10" / f"{split}.parquet")
    cfg = load_config({"data": {"source": "cifar10", "root": str(tmp_path), "download": False}}).data
    assert len(load_split(cfg, "train")) == 20


def test_cifar_offline_without_copy_says_where_to_put_one(tmp_path):
    cfg = load_config({"data": {"source": "cifar10", "root": str(tmp_path), "download": False}}).data
    with pytest.raises(DataError) as err:
        load_split(cfg, "train")
    msg = str(err.value)
    assert "cifar10/{train,test}.parquet" in msg and "cifar-10-batches-py" in msg and "download is false" in msg


@pytest.mark.timeout(120)
def test_cifar_download_failure_is_a_clear_error(tmp_path):
    cfg = load_config({"data": {"source": "cifar10", "root": str(tmp_path), "download": True}}).data
    with pytest.raises(DataError, match="download failed"):
        load_split(cfg, "train")


@requires_cifar()
def test_real_cifar10_test_split_balanced_subset():
    cfg = load_config({"data": {"source": "cifar10", "root": str(CIFAR.parent), "test_limit": 1000}}).data
    d = load_split(cfg, "test")
    assert d.images.shape == (1000, 3, 32, 32) and d.images.dtype == torch.uint8
    assert d.labels.bincount().tolist() == [100] * 10
    assert d.classes == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    assert 60 < d.images.float().mean() < 180


def test_synthetic_is_seeded_balanced_and_splits_differ():
    cfg = load_config({"data": {"source": "synthetic", "synthetic_train_size": 200, "synthetic_test_size": 100}}).data
    a, b = load_split(cfg, "train", seed=0), load_split(cfg, "train", seed=0)
    assert torch.equal(a.images, b.images) and a.labels.bincount().tolist() == [20] * 10
    t = load_split(cfg, "test", seed=0)
    assert len(t) == 100 and not torch.equal(t.images[:10], a.images[:10])
    assert not torch.equal(load_split(cfg, "train", seed=1).images, a.images)


def test_stratified_subset_exact_proportional_deterministic():
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    idx = stratified_subset(labels, 10, seed=0)
    assert idx.tolist() == sorted(idx.tolist()) and len(set(idx.tolist())) == 10
    assert labels[idx].bincount().tolist() == [5, 3, 2]
    assert torch.equal(idx, stratified_subset(labels, 10, seed=0))
    assert not torch.equal(idx, stratified_subset(labels, 10, seed=1))
    assert labels[stratified_subset(labels, 7, seed=0)].bincount().tolist() == [4, 2, 1]  # largest remainder
    cfg = load_config({"data": {"source": "synthetic", "synthetic_train_size": 200, "fraction": 0.25}}).data
    assert load_split(cfg, "train").labels.bincount().tolist() == [5] * 10


def test_cache_is_reused(tmp_path, monkeypatch):
    pq.write_table(_table(), tmp_path / "t.parquet")
    cfg = _cfg(train_path=str(tmp_path / "t.parquet"), cache_dir=str(tmp_path / "cache"))
    first = load_split(cfg, "train")
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1

    import sslray.data.sources as sources

    def no_decode(*a, **k):
        raise AssertionError("decoded again instead of using the cache")

    monkeypatch.setattr(sources, "decode_images", no_decode)
    second = load_split(cfg, "train")
    assert torch.equal(first.images, second.images) and first.classes == second.classes
    time.sleep(0.01)
    pq.write_table(_table(n=12), tmp_path / "t.parquet")  # changed source -> new key -> decoded again
    with pytest.raises(AssertionError, match="decoded again"):
        load_split(cfg, "train")
