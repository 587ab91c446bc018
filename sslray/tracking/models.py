"""Models in MLflow: a trained encoder logged to its run and registered under an alias, and the
way back -- ``models:/NAME@ALIAS``, ``models:/NAME/VERSION`` or ``runs:/RUN_ID[/...]`` to the
local checkpoint file its run holds as the artifact ``checkpoint/checkpoint.pt``.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
from pathlib import Path

from sslray.tracking.store import Tracker, TrackingError, one_line

MODEL_URI = ("models:/", "runs:/")  # the MLflow URIs a checkpoint may be given as
CHECKPOINT_ARTIFACT = "checkpoint/checkpoint.pt"


def is_model_uri(text: str) -> bool:
    return str(text).startswith(MODEL_URI)


def log_model(tracker: Tracker, run_id: str, module, name: str, checkpoint: Path,
              registered_model: str | None = None, alias: str = "best") -> str:
    """Log ``module`` as an MLflow PyTorch model (pickled: loads back as its class) and the
    checkpoint file as ``checkpoint/<its name>`` to the run; with ``registered_model``, register it
    as a new version of that model and point ``alias`` at it. Its URI: ``models:/NAME@ALIAS`` when
    registered, the logged model's URI otherwise."""
    import mlflow
    import mlflow.pytorch

    os.environ.setdefault("MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK", "true")  # log_model otherwise runs pip
    mlflow.set_tracking_uri(tracker.uri)  # the fluent API below logs to the process's store
    said = io.StringIO()  # MLflow prints "Successfully registered model ..." itself: into its log instead
    with mlflow.start_run(run_id=run_id), contextlib.redirect_stderr(said):
        info = mlflow.pytorch.log_model(module, name=name, serialization_format="pickle",
                                        registered_model_name=registered_model)
        mlflow.log_artifact(str(checkpoint), artifact_path="checkpoint")
    if said.getvalue().strip():
        logging.getLogger("mlflow").info(said.getvalue().strip())
    if not registered_model:
        return info.model_uri
    versions = tracker.client.search_model_versions(f"name='{registered_model}'")
    latest = max(versions, key=lambda v: int(v.version))
    tracker.client.set_registered_model_alias(registered_model, alias, latest.version)
    return f"models:/{registered_model}@{alias}"


def checkpoint_file(uri: str) -> Path:
    """The checkpoint a ``models:/`` or ``runs:/`` URI names, downloaded from the process's store
    (see :func:`sslray.tracking.use_by_default`) to a local file. TrackingError, one line, when the
    store has no such model, alias, version, run or artifact, or cannot be reached."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        run_id = model_run_id(uri)
        return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=CHECKPOINT_ARTIFACT))
    except MlflowException as e:
        raise TrackingError(f"MLflow cannot resolve it ({one_line(e.message)})") from None


def model_run_id(uri: str) -> str:
    """The id of the run a ``runs:/`` or ``models:/`` URI points to, looked up in the process's store."""
    import mlflow

    if uri.startswith("runs:/"):
        return uri[len("runs:/"):].split("/")[0]
    name_ver = uri[len("models:/"):]
    if "@" not in name_ver and "/" not in name_ver:
        raise TrackingError("a model URI needs a version or an alias")
    client = mlflow.tracking.MlflowClient()
    if "@" in name_ver:
        name, alias = name_ver.split("@", 1)
        return client.get_model_version_by_alias(name, alias).run_id
    name, version = name_ver.split("/", 1)
    return client.get_model_version(name, version).run_id
