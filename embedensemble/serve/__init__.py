"""HTTP service: ``python -m embedensemble.serve --ensemble DIR`` (FastAPI + uvicorn, ``pip install embedensemble[serve]``).

``create_app(ensemble_or_dir)`` returns the FastAPI app, for tests or another ASGI server.
"""

from __future__ import annotations

from .app import DEFAULT_MAX_BATCH, DEFAULT_MAX_CHARS, create_app, parse_texts

__all__ = ["DEFAULT_MAX_BATCH", "DEFAULT_MAX_CHARS", "create_app", "parse_texts"]
