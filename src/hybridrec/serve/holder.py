"""The served model: one reference, swapped whole on reload.

A request that has read the reference keeps a consistent model (weights, id maps, cache and
metrics) to the end, and a failed reload never disturbs the model being served.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import HTTPException

from hybridrec.recommend import Recommender
from hybridrec.recommend.two_stage import AUTO
from hybridrec.serve.cache import TopCache, build_cache
from hybridrec.serve.schemas import json_safe

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Served:
    """Everything a request needs about the current model, swapped as one object."""

    recommender: Recommender
    model_dir: str | None
    metrics: dict[str, Any]  # final metrics, read once at load so they match the weights
    cache: TopCache | None = None  # this model's precomputed top lists


class ModelHolder:
    """The current model; reads are lock-free, reloads are serialised.

    ``current`` is replaced by a single attribute assignment (atomic in CPython), so readers
    see either the old or the new model, never a mix. The lock only keeps two reloads from
    racing each other; the load happens before the swap, so a failure leaves the old model.
    """

    def __init__(
        self, recommender: Recommender | None = None, cache_top: int | None = None
    ) -> None:
        self.cache_top = cache_top
        self.current: Served | None = (
            _served(recommender, cache_top) if recommender is not None else None
        )
        self._reload_lock = threading.Lock()
        #: called with each newly swapped-in model, under the reload lock (the event
        #: log's per-user state follows the new model's watermark)
        self.listeners: list[Callable[[Served], None]] = []

    def get(self) -> Served:
        """The served model, or 503 before startup has loaded one."""
        served = self.current
        if served is None:
            raise HTTPException(status_code=503, detail="no model loaded yet")
        return served

    def reload(self, model_dir: str | Path | None = None) -> Served:
        """Load ``model_dir`` (default: the current directory) and swap it in.

        Raises:
            ValueError: there is no directory to reload from.
            Exception: whatever loading raised; the old model stays in place.
        """
        with self._reload_lock:
            if model_dir is None:
                model_dir = self.current.model_dir if self.current is not None else None
            if model_dir is None:
                raise ValueError("no model_dir given and the served model has no directory")
            served = _served(Recommender.load(model_dir), self.cache_top)
            self.current = served
            self._swapped(served)
        logger.info(f"serving {served.recommender!r} from {served.model_dir}")
        return served

    def add_items(self, data: Any) -> Served:
        """Swap in the served model grown by the items of ``data`` (a feature frame), with
        its cache rebuilt; serialised with reloads, the old model serving until then.

        Raises:
            ConfigError, DataError: the model or the rows cannot take the items.
        """
        with self._reload_lock:
            current = self.get()
            served = _served(current.recommender.with_items(data), self.cache_top)
            self.current = served
            self._swapped(served)
        logger.info(f"added new items: serving {served.recommender!r}")
        return served

    def _swapped(self, served: Served) -> None:
        for listener in self.listeners:
            try:
                listener(served)
            except Exception:  # the model is already swapped in; a listener must not undo it
                logger.exception("a listener of the model swap failed")

    def reload_in_background(self) -> threading.Thread:
        """Reload from the current directory in a thread (for signal handlers: a load must not
        block the event loop); errors are logged and the old model keeps serving."""

        def run() -> None:
            try:
                self.reload()
            except Exception:
                logger.exception("reload failed; still serving the previous model")

        thread = threading.Thread(target=run, name="hybridrec-reload", daemon=True)
        thread.start()
        return thread


def _served(recommender: Recommender, cache_top: int | None) -> Served:
    try:
        final = recommender.metrics.get("final", {})
    except (OSError, ValueError):  # an unreadable metrics.json must not stop serving
        logger.warning("could not read the model's metrics.json", exc_info=True)
        final = {}
    directory = recommender.config.get("directory")
    started = time.perf_counter()
    if recommender.prepare_two_stage(AUTO):  # large catalogue: no request pays for the prior
        logger.info(
            f"two-stage ranking of {len(recommender.items):,} items: item prior computed in "
            f"{time.perf_counter() - started:.1f} s"
        )
        started = time.perf_counter()
    if recommender.prepare_fold_in():  # the closed-form fold-in's linearisation
        logger.info(f"new-user fold-in prepared in {time.perf_counter() - started:.2f} s")
        started = time.perf_counter()
    cache = build_cache(recommender, cache_top)
    if cache is not None:
        logger.info(
            f"cached the top {cache.depth} items of {len(recommender.users)} users "
            f"in {time.perf_counter() - started:.2f} s"
        )
    return Served(recommender, str(directory) if directory else None, json_safe(final), cache)
