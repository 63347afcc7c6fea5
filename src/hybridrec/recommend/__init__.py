"""A trained model bundled with its id maps: the object users score and recommend with.

Top-K recommendation ranks every item by the model's ``score_all`` and takes the best ``k``:

- a known user gets the model's ranking, without the items of their training positives
  (``exclude_seen``) and never the unknown item index 0;
- a user the model does not know gets the most popular items (training positives per item);
- a new user described by a few items gets a user vector fitted to them on the spot
  (:meth:`Recommender.recommend_for_items`), everything else in the model frozen;
- an item gets the items whose embeddings point the same way (:meth:`Recommender.similar_items`);
- with ``num_candidates=N`` (two-stage top-K, for large catalogues) a known user's items are
  first narrowed to ``N`` candidates by one matrix product, then only those are scored by the
  model (see :mod:`hybridrec.retrieval`).

Ties are broken by the lower item index, so results never depend on ``torch.topk``'s order.

Modules, one job each:

- ``recommender``: :class:`Recommender`: load and save, scores, top-K for users;
- ``topk``: scoring every item for a chunk of users and taking the best ``k``;
- ``two_stage``: candidate retrieval and re-ranking (``num_candidates``);
- ``cold_start``: a new user described by items (``recommend_for_items``);
- ``fold_in``: its default fit, in closed form (the model linearised at the mean user);
- ``similar``: similar items by embedding (``similar_items``);
- ``batch_file``: recommendations for many users written to a file;
- ``result``: the :class:`Recommendation` every path returns; ``checks``: argument checks.
"""

from typing import Any

from hybridrec.models import models_with
from hybridrec.recommend.batch_file import (
    OUTPUT_FORMATS,
    RECOMMENDATION_COLUMNS,
    check_id_kind,
    output_format,
    read_user_ids,
    write_recommendations,
)
from hybridrec.recommend.recommender import Recommender
from hybridrec.recommend.result import IdsLike, Recommendation, Source

__all__ = [
    "OUTPUT_FORMATS",
    "RECOMMENDATION_COLUMNS",
    "TWO_STAGE_MODELS",
    "IdsLike",
    "Recommendation",
    "Recommender",
    "Source",
    "check_id_kind",
    "output_format",
    "read_user_ids",
    "write_recommendations",
]


def __getattr__(name: str) -> Any:
    # TWO_STAGE_MODELS: the models two-stage top-K can retrieve with, asked of the registry
    # on each use, so it includes models registered after import
    if name == "TWO_STAGE_MODELS":
        return models_with(retrieval=True)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
