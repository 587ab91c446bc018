"""Evaluation: weighted kNN, linear probes and collapse diagnostics on frozen features."""
from sslray.eval.collapse import collapse_stats, embedding_std, rankme
from sslray.eval.features import extract_features
from sslray.eval.knn import knn_accuracy, knn_predict
from sslray.eval.probe import linear_probe, probe_accuracy

__all__ = ["collapse_stats", "embedding_std", "rankme", "extract_features", "knn_accuracy",
           "knn_predict", "linear_probe", "probe_accuracy"]
