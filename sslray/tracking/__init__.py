"""Everything sslray does with MLflow goes through here; no other module imports mlflow.

    store.py   :class:`Tracker`: one tracking store -- experiments, runs nested under a parent run,
               params, batched metrics, tags, artifacts; runs read back as :class:`Run`
    models.py  a trained encoder logged and registered under an alias; ``models:/NAME@ALIAS`` and
               ``runs:/RUN_ID`` resolved to the local checkpoint file
    tags.py    every ``sslray.*`` tag name a run carries
    logs.py    MLflow's console logging, set up before it is routed or quietened

The store a command logs to: ``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else the
``mlflow.db`` in its output folder (:func:`store_uri`); with a SQLite store the artifacts go to
``mlartifacts/`` next to it.
"""
from sslray.tracking import tags
from sslray.tracking.logs import quieten, set_up as set_up_logging
from sslray.tracking.models import MODEL_URI, checkpoint_file, is_model_uri, log_model
from sslray.tracking.store import (Run, Tracker, TrackingError, env_uri, mlflow_param, sqlite_file, store_uri,
                                   use_by_default)

__all__ = ["MODEL_URI", "Run", "Tracker", "TrackingError", "checkpoint_file", "env_uri", "is_model_uri", "log_model",
           "mlflow_param", "quieten", "set_up_logging", "sqlite_file", "store_uri", "tags", "use_by_default"]
