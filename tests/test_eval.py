import math

import torch

from sslray.eval import collapse_stats, knn_accuracy, knn_predict, linear_probe, rankme


def _reference_knn(train, labels, test, num_classes, k, t):
    """Brute force, one test row at a time, straight from the formula."""
    preds = []
    for f in test:
        sims = [(float(f @ g / (f.norm() * g.norm())), int(y)) for g, y in zip(train, labels)]
        sims.sort(key=lambda s: -s[0])
        votes = [0.0] * num_classes
        for s, y in sims[:k]:
            votes[y] += math.exp(s / t)
        preds.append(max(range(num_classes), key=votes.__getitem__))
    return torch.tensor(preds)


def test_knn_matches_reference_and_is_chunk_invariant():
    g = torch.Generator().manual_seed(0)
    train, test = torch.randn(60, 8, generator=g), torch.randn(17, 8, generator=g)
    labels = torch.randint(0, 4, (60,), generator=g)
    ref = _reference_knn(train, labels, test, 4, k=7, t=0.1)
    for chunk in (1, 5, 100):
        assert torch.equal(knn_predict(train, labels, test, 4, k=7, t=0.1, chunk=chunk), ref)


def test_knn_accuracy_on_clustered_features():
    g = torch.Generator().manual_seed(1)
    centers = torch.randn(5, 16, generator=g) * 5
    ytr, yte = torch.arange(200) % 5, torch.arange(50) % 5
    xtr = centers[ytr] + torch.randn(200, 16, generator=g)
    xte = centers[yte] + torch.randn(50, 16, generator=g)
    assert knn_accuracy(xtr, ytr, xte, yte, 5, k=20) > 0.95
    assert knn_accuracy(torch.randn(200, 16, generator=g), ytr, xte, yte, 5, k=20) < 0.5


def test_rankme_and_collapse_stats():
    g = torch.Generator().manual_seed(2)
    full = torch.randn(2000, 16, generator=g)
    low = torch.randn(2000, 3, generator=g) @ torch.randn(3, 16, generator=g)
    assert rankme(full) > 14.5
    assert 2.0 < rankme(low) <= 3.01
    collapsed = torch.ones(100, 16) + 1e-9 * torch.randn(100, 16, generator=g)
    s = collapse_stats(full, collapsed)
    assert s["emb_std"] < 1e-6 and s["rankme"] < 1.5
    healthy = collapse_stats(full, full)
    assert 0.8 < healthy["emb_std_ratio"] < 1.2


def test_linear_probe_learns_separable_features():
    g = torch.Generator().manual_seed(3)
    w = torch.randn(10, 3, generator=g)
    xtr, xte = torch.randn(500, 10, generator=g), torch.randn(200, 10, generator=g)
    ytr, yte = (xtr @ w).argmax(1), (xte @ w).argmax(1)
    r = linear_probe(xtr, ytr, xte, yte, 3, epochs=30, lr=1e-2, batch_size=50)
    assert r["probe_test_top1"] > 0.9 and r["probe_train_top1"] > 0.9


def test_in_training_knn_bank_is_a_fixed_stratified_subset_of_the_training_images(tiny_cfg):
    """eval.knn_train_limit: the per-epoch kNN scores the test images against that many training
    images (the same class-stratified subset every epoch), not the whole split."""
    from sslray import data as data_mod
    from sslray.config import load_config
    from sslray.data.subset import stratified_subset
    from sslray.eval import extract_features
    from sslray.loop import evaluate, resolve_runtime
    from sslray.methods import build_method

    cfg = load_config(tiny_cfg)
    rt = resolve_runtime(cfg)
    train = data_mod.load_split(cfg.data, "train")
    test = data_mod.load_split(cfg.data, "test")
    torch.manual_seed(0)
    model = build_method(cfg, len(train.classes))
    everything = evaluate(cfg, model, train.images, train.labels, test, len(train.classes), rt)
    cfg.eval.knn_train_limit = len(train)  # the whole split: the same numbers
    assert evaluate(cfg, model, train.images, train.labels, test, len(train.classes), rt) == everything
    cfg.eval.knn_train_limit = 100
    limited = evaluate(cfg, model, train.images, train.labels, test, len(train.classes), rt)
    bank = stratified_subset(train.labels, 100, cfg.train.seed)
    assert len(bank) == 100 and torch.equal(train.labels[bank].bincount(), (train.labels.bincount() * 100 / len(train)).round().long())
    reps, _ = extract_features(model.encoder, train.images[bank], cfg.views, cfg.eval.feature_batch_size)
    test_reps, _ = extract_features(model.encoder, test.images, cfg.views, cfg.eval.feature_batch_size)
    expected = knn_accuracy(reps, train.labels[bank], test_reps, test.labels, len(train.classes), cfg.eval.knn_k, cfg.eval.knn_t)
    assert limited["knn_top1"] == expected and limited["knn_top1"] != everything["knn_top1"]
