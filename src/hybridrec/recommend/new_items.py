"""New items for a trained model, from their features, without retraining.

A model trained with item features scores an item it never saw in training from its
attributes alone (its id part is unused). So an item that appears after training needs no
gradient step: it gets a new row (no id, its encoded attributes, by the vocabularies saved
at training) and is ranked with the others at once. The result is a new
:class:`Recommender`; the one it came from is not modified.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from hybridrec.data.encoding import IdEncoder
from hybridrec.data.seen import SeenItems
from hybridrec.errors import ConfigError
from hybridrec.features.read import read_feature_rows
from hybridrec.features.table import FeatureTable
from hybridrec.models.featured import NOT_ROWS, FeaturedEmbedding

if TYPE_CHECKING:
    from hybridrec.recommend.recommender import Recommender

#: State-dict prefixes of the per-item tables that grow by one row per new item.
ITEM_TABLES = ("item_embedding.", "item_bias.", "cold_user_item_bias")


def with_items(
    recommender: Recommender, data: str | Path | pd.DataFrame, id_col: str = "itemId"
) -> Recommender:
    """A copy of ``recommender`` that also knows the items of ``data`` (a feature file or
    frame: the id column, then feature columns of the training item-feature file).

    Raises:
        ConfigError: the model has no item features, ``data`` has a column the model does
            not know, or an id the model already knows.
        DataError: ``data`` is unreadable or has a repeated or missing id.
    """
    from hybridrec.recommend.recommender import Recommender

    model = recommender.model
    stored = recommender.config.get("settings", {}).get("features", {}).get("items")
    if not isinstance(getattr(model, "item_embedding", None), FeaturedEmbedding) or not stored:
        raise ConfigError(
            "this model was trained without item features (train with --item-features); "
            "new items need their features to be scored without retraining"
        )
    table = FeatureTable.from_dict(stored)
    path, _, ids, columns = read_feature_rows(data, id_col)
    known_fields = {f.name for f in table.fields}
    strange = sorted(set(columns) - known_fields)
    if strange:
        raise ConfigError(
            f"{path}: column(s) {', '.join(map(repr, strange[:5]))} are not item features of "
            f"this model, which knows {', '.join(sorted(known_fields))}"
        )
    already = recommender.items.transform(ids) != 0
    if already.any():
        first = ids[int(np.argmax(already))]
        first = first.item() if isinstance(first, np.generic) else first  # 5, not np.int64(5)
        raise ConfigError(
            f"{path}: item {first!r} is already known to the model; give only new items"
        )
    old_n = recommender.items.num_embeddings
    items = IdEncoder(_joined(recommender.items.ids, ids))
    encoded = table.encode(
        columns, np.arange(old_n, items.num_embeddings), items.num_embeddings, new=True
    )
    # the cold-user popularity term of an item with no interactions (fitted as
    # weight * (log1p(count) - mean)), as a catalogue item without rows had at training
    cold = recommender.config.get("settings", {}).get("cold_user_popularity") or {}
    no_rows = -float(cold.get("weight", 0.0)) * float(cold.get("mean_log_count", 0.0))
    grown = _grown_model(model, items.num_embeddings, no_rows)
    with torch.no_grad():
        new = slice(old_n, items.num_embeddings)
        emb = grown.item_embedding
        emb.feature_tokens[new] = encoded.tokens[new]
        emb.feature_weights[new] = encoded.weights[new]
        emb.feature_numeric[new] = encoded.numeric[new]
        emb.has_id[new] = 0.0
    seen = recommender.seen
    if seen is not None:
        counts = np.pad(seen.item_counts, (0, len(ids)))
        seen = SeenItems(seen.indptr, seen.items, counts)
    return Recommender(grown, recommender.users, items, model_name=recommender.model_name,
                       config=recommender.config, batch_size=recommender.batch_size,
                       seen=seen)  # fmt: skip


def _joined(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """The encoder's ids then the new ones, in the encoder's kind (int or text)."""
    if len(old) and isinstance(old[0], str):
        return np.concatenate([old, np.asarray([str(x) for x in new], dtype=object)])
    if new.dtype == object:
        raise ConfigError(
            "the model's item ids are integers; new item ids must be integers (of at most 18 "
            "digits) too"
        )
    return np.concatenate([old, new.astype(np.int64)])


def _grown_model(model: torch.nn.Module, num_items: int, cold_user_fill: float = 0.0) -> Any:
    """The same model with ``num_items`` item rows: trained rows copied, new rows zero, but
    ``cold_user_fill`` in the cold-user popularity term (what an item without rows gets)."""
    config = model.config  # type: ignore[attr-defined]
    cls = type(model)
    grown = cls(cls.config_class(**{**vars(config), "num_items": num_items}))
    state = {}
    for name, tensor in model.state_dict().items():
        per_row = name.rpartition(".")[2] not in NOT_ROWS
        if name.startswith(ITEM_TABLES) and per_row and tensor.shape[0] == config.num_items:
            extra = tensor.new_zeros((num_items - tensor.shape[0], *tensor.shape[1:]))
            if name == "cold_user_item_bias":
                extra += cold_user_fill
            tensor = torch.cat([tensor, extra])
        state[name] = tensor
    grown.load_state_dict(state)
    return grown.eval()
