"""Similar items: the items whose embeddings point the same way as a given item's.

Cosine similarity over the model's item embedding table, so only models with one (the
``similar_items`` capability) can answer; the scores are similarities, not probabilities.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from hybridrec.data.encoding import UNKNOWN_INDEX
from hybridrec.errors import HybridRecError, UnknownIdError
from hybridrec.models import capabilities, models_with
from hybridrec.models.featured import table_vectors
from hybridrec.recommend.checks import check_k
from hybridrec.recommend.result import Recommendation, frozen
from hybridrec.recommend.topk import top_k

if TYPE_CHECKING:
    from hybridrec.recommend.recommender import Recommender


@torch.no_grad()
def similar_items(recommender: Recommender, item_id: Any, k: int) -> Recommendation:
    """:meth:`Recommender.similar_items`, which documents the arguments and errors."""
    k = check_k(k)
    if not capabilities(recommender.model).similar_items:
        raise HybridRecError(
            f"model {recommender.model_name} has no item embeddings to compare; similar items "
            f"need a model with one ({', '.join(models_with(similar_items=True))})"
        )
    embedding = recommender.model.item_embedding
    items = recommender.items
    index = int(items.transform([item_id])[0])
    if index == UNKNOWN_INDEX:
        raise UnknownIdError(
            f"item {item_id!r} is not known to the model (it has no training rows); "
            "ask with an item id from the training data"
        )
    vectors = F.normalize(table_vectors(embedding).float(), dim=1)  # zero rows stay zero
    similarity = (vectors @ vectors[index])[None]  # (1, I)
    similarity[0, [UNKNOWN_INDEX, index]] = -torch.inf
    ((top, values),) = top_k(similarity, k)
    return Recommendation(
        None,
        frozen(items.inverse_transform(top)),
        frozen(values.astype(np.float32)),
        "similar",
    )
