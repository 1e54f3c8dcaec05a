"""The FastAPI application: ``POST /predict``, ``GET /health`` and the page at ``GET /``.

One ensemble per app, loaded once when the app is created (its members load on the first
prediction, or at start-up with ``warmup=True``). Model calls run in a worker thread, one at a
time (a lock), so the event loop keeps answering ``/health`` during a long batch and torch's
thread pool (see :func:`embedensemble.runtime.set_thread_policy`) is never shared by two batches.

Every failure is answered, never raised into the server: bad input gets 400/413/422 with a
``detail`` message saying what to change; a model failure gets 500 with the exception's type and
message (its traceback goes to the log) and the next request is served as usual.
"""

# no `from __future__ import annotations` here: FastAPI resolves endpoint annotations (Request) at runtime
import json
import os
import threading
from importlib import resources
from pathlib import Path
from typing import Any

from .. import __version__
from .._logging import get_logger
from ..data import MAX_TWEET_CHARS
from ..errors import ConfigError, DataError, EmbedEnsembleError
from ..labels import EMOTIONS

logger = get_logger(__name__)
DEFAULT_MAX_BATCH = 256
DEFAULT_MAX_CHARS = MAX_TWEET_CHARS


class RequestError(Exception):
    """A request the client must change: its HTTP status and the message shown to the user."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def parse_texts(body: bytes, *, max_batch: int, max_chars: int) -> list[str]:
    """The texts of a ``POST /predict`` body: ``{"texts": [...]}`` or a bare JSON list of strings."""
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RequestError(400, f"the body is not valid JSON ({exc}); send {{\"texts\": [\"a tweet\", ...]}}") from None
    if isinstance(payload, dict):
        unknown = sorted(set(payload) - {"texts"})
        if "texts" not in payload or unknown:
            raise RequestError(422, f"the JSON object must have exactly one key, \"texts\" (got keys {sorted(payload)})")
        payload = payload["texts"]
    if not isinstance(payload, list):
        raise RequestError(422, f"\"texts\" must be a list of strings, got {type(payload).__name__}")
    if len(payload) > max_batch:
        raise RequestError(413, f"{len(payload)} texts in one request; the limit is {max_batch}: split the batch")
    for i, text in enumerate(payload):
        if not isinstance(text, str):
            raise RequestError(422, f"texts[{i}] must be a string, got {type(text).__name__}")
        if not text.strip():
            raise RequestError(422, f"texts[{i}] is empty")
        if len(text) > max_chars:
            raise RequestError(413, f"texts[{i}] has {len(text)} characters; the limit is {max_chars}")
    return payload


def _page() -> str:
    return resources.files(__package__).joinpath("static/index.html").read_text(encoding="utf-8")


def create_app(
    ensemble_or_dir: Any,
    *,
    max_batch: int = DEFAULT_MAX_BATCH,
    max_chars: int = DEFAULT_MAX_CHARS,
    use_cache: bool = False,
    threads: int | None = None,
    warmup: bool = False,
):
    """Build the app around a fitted ``EmotionEnsemble`` or the path of a saved one.

    ``max_batch``: most texts per request; ``max_chars``: most characters per text (both 413 when
    exceeded). ``use_cache``/``threads`` apply when loading from a path (see
    :func:`embedensemble.ensemble.load_ensemble`). ``warmup=True`` scores one text at start-up so
    the first request does not pay for loading the members.
    """
    from fastapi import FastAPI, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import HTMLResponse, JSONResponse

    if max_batch < 1 or max_chars < 1:
        raise ConfigError(f"max_batch and max_chars must be at least 1, got {max_batch} and {max_chars}")
    source = None
    if isinstance(ensemble_or_dir, str | os.PathLike):
        from ..ensemble import load_ensemble

        source = str(ensemble_or_dir)
        ensemble = load_ensemble(Path(ensemble_or_dir), use_cache=use_cache, threads=threads)
    else:
        ensemble = ensemble_or_dir
    thresholds = {e: float(t) for e, t in ensemble.thresholds.items()}
    lock = threading.Lock()
    page = _page()

    def score(texts: list[str]) -> list[dict]:
        with lock:
            proba = ensemble.predict_proba(texts).to_numpy()
        decided = ensemble.decide(proba)
        return [
            {
                "text": text,
                "labels": [e for j, e in enumerate(EMOTIONS) if chosen[j]],
                "probabilities": {e: round(float(row[j]), 6) for j, e in enumerate(EMOTIONS)},
            }
            for text, row, chosen in zip(texts, proba, decided)
        ]

    if warmup:
        score(["warming up"])

    app = FastAPI(title="embedensemble", version=__version__, docs_url="/docs", redoc_url=None)
    app.state.ensemble = ensemble

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/health")
    def health() -> dict:
        return {
            "status": "ok",
            "version": __version__,
            "ensemble": source,
            "members": list(getattr(ensemble, "member_names", [])),
            "labels": list(EMOTIONS),
            "thresholds": thresholds,
            "decision": ensemble.decision,
            "limits": {"max_batch": max_batch, "max_chars": max_chars},
        }

    @app.post("/predict")
    async def predict(request: Request) -> JSONResponse:
        # the body is read and checked here rather than by a pydantic model so every refusal says what to change
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > _max_body(max_batch, max_chars):
            return _error(413, f"the request body is {declared} bytes; the limit is {_max_body(max_batch, max_chars)}")
        try:
            texts = parse_texts(await request.body(), max_batch=max_batch, max_chars=max_chars)
            results = await run_in_threadpool(score, texts) if texts else []
        except RequestError as exc:
            return _error(exc.status, str(exc))
        except DataError as exc:  # input the model refused (the library names the text)
            return _error(422, str(exc))
        except EmbedEnsembleError as exc:  # e.g. a damaged member or NaN output: the server's fault, still answered
            logger.error("prediction failed: %s", exc)
            return _error(500, f"prediction failed: {exc}")
        except Exception as exc:
            logger.exception("prediction failed")
            return _error(500, f"prediction failed ({type(exc).__name__}: {exc}); the server keeps running")
        return JSONResponse({"results": results, "thresholds": thresholds})

    def _error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"detail": message}, status_code=status)

    return app


def _max_body(max_batch: int, max_chars: int) -> int:
    # 4 bytes per character (worst-case UTF-8) plus JSON escaping and punctuation, doubled for slack
    return 2 * max_batch * (4 * max_chars + 16) + 1024
