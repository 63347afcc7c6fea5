"""What an updated artifact records of where it came from: its parent, the data it was
updated with, and the watermark the next ``update --events`` starts after."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pandas as pd

from hybridrec.artifact import CONFIG
from hybridrec.config import TrainConfig
from hybridrec.data.io import TIMESTAMP
from hybridrec.recommend import Recommender
from hybridrec.update.grow import Growth
from hybridrec.update.rows import UpdateRows


def lineage(
    parent: Recommender,
    parent_dir: Path,
    frame: pd.DataFrame,
    new_frame: pd.DataFrame,
    source: str,
    event_id: int | None,
    growth: Growth,
    rows: UpdateRows,
    config: TrainConfig,
    grow_only: bool,
) -> dict[str, Any]:
    """The lineage and watermark the new artifact keeps."""
    parent_config = parent_dir / CONFIG
    digest = hashlib.sha256(parent_config.read_bytes()).hexdigest()
    old_mark = parent.config.get("settings", {}).get("watermark", {})
    latest = None
    if TIMESTAMP in new_frame.columns and len(new_frame):
        latest = float(new_frame[TIMESTAMP].max())
    if old_mark.get("timestamp") is not None:
        latest = max(x for x in (latest, old_mark["timestamp"]) if x is not None)
    update = {
        "parent": str(parent_dir),
        "parent_created": parent.config.get("created"),
        "parent_config_sha256": digest,
        "data": source,
        "rows": len(frame),
        "positives": len(new_frame),
        "new_users": growth.num_users - growth.old_users,
        "new_items": growth.num_items - growth.old_items,
        "epochs": 0 if grow_only else config.epochs,
        "seed": config.seed,
        **rows.describe(),
    }
    watermark = {
        "event_id": event_id if event_id is not None else old_mark.get("event_id"),
        "timestamp": latest,
        "rows": int(old_mark.get("rows", 0)) + len(frame),
    }
    return {"update": update, "watermark": watermark}
