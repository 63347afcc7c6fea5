"""Side features in a training run: the options, and what the pipeline does with them.

The pipeline reads the feature files before it fits the id encoders (ids that only the
feature files name join them: that is how cold items and users arrive), passes each
table's shape to the model, and loads the encoded features into the model's
:class:`~hybridrec.models.featured.FeaturedEmbedding` tables together with which rows have
training interactions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from hybridrec.config import check_finite, option
from hybridrec.data.encoding import IdEncoder
from hybridrec.errors import ConfigError, DataError
from hybridrec.features import FeatureData, encode_features, parse_kinds, read_features
from hybridrec.models import capabilities, models_with

#: ``--weight-decay`` when it is not given and the run has side features. On the ML-100K
#: cold task (val split, seed 0) cold-item quality fell as training went on without it
#: (NDCG@20 0.35 at 5 epochs, 0.31 at 10, 0.25 at 20), so the epochs chosen on warm
#: held-out rows cost cold items; 1e-5 kept 12 epochs at 0.34 with the warm holdout curve
#: unchanged (best NDCG@10 0.083 at epoch 13), where 1e-4 stopped warm learning at 0.057.
FEATURE_WEIGHT_DECAY = 1e-5


@dataclass
class FeatureConfig:
    """Where the side features are and how to read them."""

    user_features: str | None = option(
        None,
        "CSV/Parquet of user attributes ($feature_models): the user id column (as "
        "--user-col, else the first column), then one column per attribute; users without "
        "interactions are kept",
    )
    item_features: str | None = option(
        None,
        "CSV/Parquet of item attributes ($feature_models; id column as --item-col, else the "
        "first); items without interactions are kept and recommended from their attributes",
    )
    user_feature_types: str | None = option(
        None, "kinds of user feature columns, e.g. age=numeric,zip=categorical (else inferred)"
    )
    item_feature_types: str | None = option(
        None,
        "kinds of item feature columns: categorical, multi (separator-joined tokens) or "
        "numeric, e.g. genres=multi,year=numeric (else inferred)",
    )
    feature_separator: str = option("|", "separator of the tokens of a multi-valued feature")

    def __post_init__(self) -> None:
        check_finite(self)
        if not self.feature_separator:
            raise ConfigError("--feature-separator must be at least one character")
        parse_kinds(self.user_feature_types, "--user-feature-types")
        parse_kinds(self.item_feature_types, "--item-feature-types")


@dataclass
class SideFeatures:
    """The feature files of a run, read and fitted (either may be absent)."""

    users: FeatureData | None = None
    items: FeatureData | None = None

    @classmethod
    def read(
        cls,
        config: FeatureConfig,
        user_col: str,
        item_col: str,
        users: str | pd.DataFrame | None = None,
        items: str | pd.DataFrame | None = None,
    ) -> SideFeatures:
        """Read the files of ``config`` (or the frames ``users``/``items`` instead)."""
        sep = config.feature_separator
        user_source = users if users is not None else config.user_features
        item_source = items if items is not None else config.item_features
        user_kinds = parse_kinds(config.user_feature_types, "--user-feature-types")
        item_kinds = parse_kinds(config.item_feature_types, "--item-feature-types")
        return cls(
            None
            if user_source is None
            else read_features(user_source, user_col, user_kinds, sep, other_col=item_col),
            None
            if item_source is None
            else read_features(item_source, item_col, item_kinds, sep, other_col=user_col),
        )

    def __bool__(self) -> bool:
        return self.users is not None or self.items is not None

    def check_model(self, model: str) -> None:
        """A clear error for a model that cannot use features."""
        if (self.users or self.items) and not capabilities(model).features:
            raise ConfigError(
                f"--model {model} does not use side features; models that do: "
                f"{', '.join(models_with(features=True))}"
            )

    def model_options(self) -> dict[str, Any]:
        """The feature-table shapes the model is built with."""
        out: dict[str, Any] = {}
        if self.users is not None:
            out["user_feature_shape"] = self.users.table.shape()
        if self.items is not None:
            out["item_feature_shape"] = self.items.table.shape()
        return out

    def attach(
        self,
        model: torch.nn.Module,
        users: IdEncoder,
        items: IdEncoder,
        user_idx: torch.Tensor,
        item_idx: torch.Tensor,
    ) -> None:
        """Load the encoded features into ``model``'s tables; rows without training rows
        (``user_idx``/``item_idx`` are the training pairs) are marked as id-less."""
        for data, encoder, table, trained in (
            (self.users, users, getattr(model, "user_embedding", None), user_idx),
            (self.items, items, getattr(model, "item_embedding", None), item_idx),
        ):
            if data is None or table is None:
                continue
            has_id = torch.bincount(trained.long().cpu(), minlength=encoder.num_embeddings) > 0
            _check_overlap(data, encoder, has_id, "users" if data is self.users else "items")
            table.set_features(encode_features(data, encoder), has_id=has_id)

    def tables(self) -> dict[str, Any]:
        """The fitted vocabularies, for the artifact (new ids are encoded with them)."""
        return {
            name: data.table.to_dict()
            for name, data in (("users", self.users), ("items", self.items))
            if data is not None
        }


def _check_overlap(data: FeatureData, encoder: IdEncoder, has_id: torch.Tensor, kind: str) -> None:
    """Refuse a feature file none of whose ids has training rows: nothing could learn what
    its features mean, and it is most likely the other entity's file (user ids read as
    items would become phantom cold items that get recommended)."""
    rows = torch.from_numpy(np.asarray(encoder.transform(data.ids), dtype=np.int64))
    if len(rows) and not bool(has_id[rows].any()):
        raise DataError(
            data.source,
            f"none of its {len(rows):,} ids is one of the training data's {kind}",
            expected=f"features of the {kind} of the training data (the --{kind[:-1]}-features "
            "file; are the two feature files swapped?)",
        )
