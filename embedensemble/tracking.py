"""Optional experiment tracking: send a finished run's config and metrics to W&B or MLflow.

Neither package is a dependency; each is imported only inside :func:`log_run`, and only for
the backend asked for. Nothing here is imported by ``import embedensemble``.

Keys are flattened with ``/`` (``stack/eval/macro_f1``, ``members/e5/oof/per_emotion_f1/joy``,
``thresholds/joy``): W&B groups panels by the first segment and MLflow accepts ``/`` in names.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._logging import get_logger
from .errors import ConfigError, EmbedEnsembleError, RunNotFoundError
from .io import PathLike, read_json

logger = get_logger(__name__)
BACKENDS = ("wandb", "mlflow")
# MLflow rejects other characters in metric/param names; W&B accepts this subset too
_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. /]")
_MLFLOW_PARAM_MAX = 500  # the smallest value limit across MLflow versions


class TrackingUnavailableError(EmbedEnsembleError, ImportError):
    """The requested tracking backend is not installed."""


def flatten(obj: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> {"a/b/c": leaf}; lists are kept as leaves."""
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}/{_UNSAFE.sub('_', str(key))}" if prefix else _UNSAFE.sub("_", str(key))
        if isinstance(value, Mapping):
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


def run_payload(run_dir: PathLike) -> tuple[str, dict[str, Any], dict[str, float]]:
    """(run name, flat params, flat numeric metrics) read from a run folder."""
    run = Path(run_dir)
    if not run.is_dir():
        raise RunNotFoundError(f"run folder {run} does not exist")
    metrics_file = run / "metrics.json"
    if not metrics_file.is_file():
        raise RunNotFoundError(f"run {run} has no metrics.json; stack it first (python -m embedensemble.stack)")
    config = read_json(run / "config.json") if (run / "config.json").is_file() else {}
    info = read_json(run / "run.json") if (run / "run.json").is_file() else {}
    params = flatten({"config": config, "run": {k: v for k, v in info.items() if k != "versions"}})
    metric_tree: dict[str, Any] = dict(read_json(metrics_file))
    if (run / "thresholds.json").is_file():
        metric_tree["thresholds"] = read_json(run / "thresholds.json").get("thresholds", {})
    metrics = {k: float(v) for k, v in flatten(metric_tree).items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return str(config.get("name") or run.name), params, metrics


def _import(backend: str) -> Any:
    try:
        return importlib.import_module(backend)
    except ImportError:
        raise TrackingUnavailableError(
            f"tracking backend {backend!r} is not installed; install it with `pip install {backend}`"
        ) from None


def log_run(run_dir: PathLike, backend: str | None = None, *, project: str | None = None) -> str | None:
    """Log a run's config (as params) and metrics to ``backend``; return the tracker's run id.

    ``backend=None`` does nothing and returns ``None``, so callers can pass a CLI flag through.
    ``project`` is the W&B project / MLflow experiment (default ``$WANDB_PROJECT`` or
    ``$MLFLOW_EXPERIMENT_NAME``, else ``"embedensemble"``).
    """
    if backend is None:
        return None
    if backend not in BACKENDS:
        raise ConfigError(f"tracking backend {backend!r} is not one of {list(BACKENDS)}")
    name, params, metrics = run_payload(run_dir)
    module = _import(backend)
    if backend == "wandb":
        run_id = _log_wandb(module, name, params, metrics, project or os.environ.get("WANDB_PROJECT") or "embedensemble")
    else:
        run_id = _log_mlflow(module, name, params, metrics,
                             project or os.environ.get("MLFLOW_EXPERIMENT_NAME") or "embedensemble")
    logger.info("logged run %s to %s (%s)", name, backend, run_id)
    return run_id


def _log_wandb(wandb: Any, name: str, params: dict[str, Any], metrics: dict[str, float], project: str) -> str:
    run = wandb.init(project=project, name=name, config=params, job_type="embedensemble", reinit=True)
    try:
        # summary, not log(): these are final numbers, not a time series
        run.summary.update(metrics)
        return str(run.id)
    finally:
        run.finish()


def _log_mlflow(mlflow: Any, name: str, params: dict[str, Any], metrics: dict[str, float], experiment: str) -> str:
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=name) as active:
        mlflow.log_params({k: str(v)[:_MLFLOW_PARAM_MAX] for k, v in params.items()})
        mlflow.log_metrics(metrics)
        return str(active.info.run_id)
