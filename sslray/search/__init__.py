"""Hyperparameter search: search-space files, the Optuna + ASHA driver (trials in-process or on Ray Train), MLflow tracking."""
from sslray.search.space import SearchSpace, load_search_space

__all__ = ["SearchSpace", "load_search_space"]
