"""Typed configuration shared by the API, the CLI and the artifact.

Every field carries its CLI flag and help text in ``metadata`` so the command line is generated
from these dataclasses (see ``cli.options.add_config_arguments``) and cannot drift from them. Help
that names the models able to do something says ``$retrieval_models``, ``$next_item_models``
or ``$default_losses``; the CLI fills them in from the model registry.
Validation lives in ``__post_init__`` and names the flag to change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from numbers import Integral, Real

from hybridrec.errors import ConfigError


def option(default: object, help: str, *, flag: str | None = None, **kw: object) -> object:
    """A dataclass field with its CLI flag and help text attached."""
    meta = {"help": help}
    if flag is not None:
        meta["flag"] = flag
    meta.update(kw)
    return field(default=default, metadata=meta)


#: Integer options are handed to PyTorch and numpy, which take 64-bit integers.
INT64_MAX = 2**63 - 1


def check_finite(config: object) -> None:
    """Refuse NaN and infinity in any number option: comparisons with NaN are all false, so
    range checks let it through and it would surface later as a crash or a wrong model.
    Integers (alone or in a tuple of sizes) must fit in 64 bits, or PyTorch overflows."""
    for spec in fields(config):  # type: ignore[arg-type]
        value = getattr(config, spec.name)
        flag = spec.metadata.get("flag") or "--" + spec.name.replace("_", "-")
        _check_kind(value, str(spec.type), flag)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{flag} must be a finite number, got {value}")
        numbers = value if isinstance(value, tuple) else (value,)
        for number in numbers:
            if isinstance(number, int) and not isinstance(number, bool) and abs(number) > INT64_MAX:
                raise ConfigError(f"{flag} must be a 64-bit integer (at most 2^63-1), got {number}")


def _check_kind(value: object, annotation: str, flag: str) -> None:
    """An integer option holds integers (``batch_size=2.5`` or ``embedding_dim=True``
    from the API would be truncated or read as 1); a number option holds numbers."""
    if value is None:
        return
    if annotation.startswith("tuple[int"):  # sizes: also digits as text, as on the CLI
        bad = [v for v in value if isinstance(v, bool) or not isinstance(v, Integral | str)]  # type: ignore[union-attr]
        if bad:
            raise ConfigError(f"{flag} must be integers, got {bad[0]!r}")
    elif annotation.split(" |")[0] == "int":
        if isinstance(value, bool) or not isinstance(value, Integral):
            raise ConfigError(f"{flag} must be an integer, got {value!r}")
    elif annotation.split(" |")[0] == "float":
        if isinstance(value, bool) or not isinstance(value, Real):
            raise ConfigError(f"{flag} must be a number, got {value!r}")


#: Layers (MLP hidden layers, transformer blocks) above this are surely a typo, and building
#: them would take minutes before the memory check could refuse the model.
MAX_LAYERS = 64


def check_depth(count: int, flag: str) -> None:
    """Refuse a layer count over :data:`MAX_LAYERS` before any layer is built."""
    if count > MAX_LAYERS:
        raise ConfigError(f"{flag} asks for {count:,} layers; at most {MAX_LAYERS} are allowed")


#: ``--threads`` above this is surely a typo (and PyTorch's thread count is a C int).
MAX_THREADS = 1024
#: The batch size and learning rate of small and medium data; larger epochs scale both.
DEFAULT_BATCH_SIZE, DEFAULT_LEARNING_RATE = 2048, 5e-3
LOSSES = ("auto", "bce", "bpr", "ce")
SAMPLINGS = ("uniform", "popularity")
SPARSE_MODES = ("auto", "on", "off")
KNOWN_NEGATIVES = ("exclude", "include")
HISTORY_WINDOWS = ("all", "latest")
AMP_MODES = ("off", "bf16", "fp16")
AT_K_METRICS = ("hr", "ndcg", "recall", "precision", "map")
STOP_METRICS = (*AT_K_METRICS, "mrr", "auc", "accuracy", "loss")


@dataclass
class DataConfig:
    """How to read an interaction file."""

    user_col: str = option("userId", "name of the user id column")
    item_col: str = option("itemId", "name of the item id column")
    target_col: str = option(
        "target", "name of the 0/1 label column; a file without it is all positives"
    )
    threshold: float | None = option(
        None,
        "turn a numeric target (e.g. a rating) into 0/1: 1 where target >= THRESHOLD",
    )

    def __post_init__(self) -> None:
        check_finite(self)
        names = {"--user-col": self.user_col, "--item-col": self.item_col}
        names["--target-col"] = self.target_col
        for flag, name in names.items():
            if not name:
                raise ConfigError(f"{flag} must be a non-empty column name")
        if len({self.user_col, self.item_col, self.target_col}) < 3:
            raise ConfigError(
                "--user-col, --item-col and --target-col must name three different columns, "
                f"got {self.user_col!r}, {self.item_col!r}, {self.target_col!r}"
            )


@dataclass
class TrainConfig:
    """How to train: optimisation, batching, hardware and randomness."""

    epochs: int | None = option(
        None,
        "most passes over the training data (early stopping may end sooner); default: the "
        "model's own ($default_epochs)",
    )
    batch_size: int | None = option(
        None,
        "samples per optimisation step; default: 2048, and for the pointwise models 4096 "
        "from 4M and 8192 from 16M samples per epoch (hybridrec.training.scale)",
    )
    learning_rate: float | None = option(
        None,
        "Adam learning rate; default: 0.005, times sqrt(batch size / 2048) when the batch "
        "size is the default's",
        flag="--lr",
    )
    weight_decay: float | None = option(
        None,
        "L2 penalty on the weights (Adam weight_decay; embedding tables trained sparsely decay "
        "the rows a step touches); default: 1e-5 with side features, which keeps cold-start "
        "quality from falling as training goes on, else 0",
    )
    seed: int = option(0, "seed for initialisation, shuffling and dropout")
    device: str = option("auto", "auto (cuda, else mps, else cpu), cpu, cuda, cuda:N or mps")
    num_threads: int = option(
        1,
        "CPU threads for PyTorch; 1 is robust on shared machines, 0 keeps PyTorch's default",
        flag="--threads",
    )
    eval_batch_size: int = option(65536, "samples per batch when validating")
    loss: str = option(
        "auto",
        "auto: the model's own ($default_losses); "
        "bce: pointwise, positives vs sampled negatives (or the file's 0/1 labels); "
        "bpr: pairwise, each positive against a sampled negative; "
        "ce: softmax over the whole catalogue (costly for MLP models: use a small --batch-size)",
    )
    negatives: int = option(8, "sampled negatives per positive for positives-only data")
    sampling: str = option(
        "uniform", "negative distribution: uniform over items, or popularity-weighted"
    )
    recency_half_life: float = option(
        8.0,
        "positives-only data with timestamps: weight each positive by 0.5 ** (a / H), a = how "
        "many of its user's interactions are newer, so the recent past is fitted best; 0 = "
        "every positive weighs the same",
    )
    recency_floor: float = option(
        0.05, "smallest recency weight (relative to the newest), so old positives still count"
    )
    catalogue_weight: float = option(
        1.0,
        "models with a user-item dot product ($retrieval_models) trained on sampled "
        "negatives: add this times a softmax over the whole catalogue on that dot product "
        "(what two-stage retrieval ranks by); 0 = off",
    )
    softmax_negatives: int = option(
        2048,
        "items in a catalogue softmax (--catalogue-weight, and --loss ce of $next_item_models): a "
        "catalogue of at most this many items is used whole; a larger one is sampled, this "
        "many shared, popularity-drawn, log-Q-corrected negatives per batch, so the cost "
        "per sample does not grow with the catalogue",
    )
    known_negatives: str = option(
        "exclude",
        "catalogue softmaxes: exclude = a user's other training items are not their "
        "negatives (a ranking never recommends them): in --loss ce of $next_item_models the "
        "other items of the history window, in --loss ce of a pointwise model and in "
        "--catalogue-weight (when the catalogue is "
        "used whole: at most --softmax-negatives items) the user's other training items; "
        "include = every item but the "
        "positive is (the plain softmax, the original SASRec)",
    )
    history_windows: str = option(
        "latest",
        "training histories of $next_item_models: latest = each user's latest --max-len "
        "items (the original SASRec); all = every user's whole history, cut into windows of "
        "--max-len items, so every interaction is a next item once",
    )
    sparse_embeddings: str = option(
        "auto",
        "update only the embedding rows a batch touches (sparse gradients, lazy Adam), so a "
        "step costs what the batch touches, not the table size; auto = on for tables of "
        "over 2^20 weights, unless "
        "--weight-decay, --loss ce of a pointwise model or several CUDA processes "
        "need dense gradients; on; off",
    )
    ema_decay: float = option(
        0.999,
        "validate and keep an exponential moving average of the weights (0.999: about the "
        "last 1000 steps, fewer early in training) instead of the last step's; 0 = off",
    )
    early_stop: str | None = option(
        "auto",
        "validation metric to stop on, keeping its best epoch: ndcg@10, hr@10, mrr, auc, loss, "
        "...; auto = ndcg@K (first --k) for positives-only validation, loss for 0/1 labels; "
        "none = train every epoch and keep the last",
    )
    refit: str = option(
        "all",
        "without --val: after choosing the number of epochs on rows held out of the training "
        "data, all = retrain on every row for that many epochs; none = keep the model "
        "trained without the held-out rows",
    )
    patience: int | None = option(
        None,
        "epochs without improvement before early stopping; default: the model's own "
        "($default_patiences)",
    )
    ks: tuple[int, ...] = option(
        (10,), "cut-offs for validation ranking metrics, e.g. 5,10,20", flag="--k"
    )
    checkpoint_every: int = option(
        0,
        "write a training checkpoint (model, optimizer, RNG and early-stopping state) every N "
        "epochs and after the last; 0 = never",
    )
    checkpoint_dir: str | None = option(
        None, "folder for checkpoint.pt (default: the --out model directory)"
    )
    resume: str | None = option(
        None,
        "continue the interrupted run whose checkpoint.pt is in this folder (pass the same "
        "options as that run; --epochs is the total)",
    )
    amp: str = option(
        "off",
        "mixed precision autocast: off, bf16 (CPU or CUDA), or fp16 (CUDA, with a loss scaler)",
    )
    compile: bool = option(False, "compile the training step with torch.compile")

    @property
    def batch(self) -> int:
        """The batch size in effect: ``--batch-size``, else the small-data default (``fit``
        first sets the data's default, :func:`hybridrec.training.scale.with_data_defaults`)."""
        return self.batch_size if self.batch_size is not None else DEFAULT_BATCH_SIZE

    @property
    def lr(self) -> float:
        """The learning rate in effect, on the same terms as :attr:`batch`."""
        return self.learning_rate if self.learning_rate is not None else DEFAULT_LEARNING_RATE

    def __post_init__(self) -> None:
        check_finite(self)
        if self.seed < 0:  # NumPy's generators (the holdout, the splits) refuse it
            raise ConfigError(f"--seed must be >= 0, got {self.seed}")
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError(f"--epochs must be at least 1, got {self.epochs}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {self.batch_size}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"--ema-decay must be in [0, 1), got {self.ema_decay}")
        if self.eval_batch_size < 1:
            raise ConfigError(f"--eval-batch-size must be at least 1, got {self.eval_batch_size}")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise ConfigError(f"--lr must be a positive number, got {self.learning_rate}")
        if self.weight_decay is not None and self.weight_decay < 0:
            raise ConfigError(f"--weight-decay must be >= 0, got {self.weight_decay}")
        self.ks = tuple(int(k) for k in self.ks)
        if not self.ks or min(self.ks) < 1:
            raise ConfigError(f"--k must be positive cut-offs like 5,10,20, got {self.ks}")
        if self.loss not in LOSSES:
            raise ConfigError(f"--loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.negatives < 1:
            raise ConfigError(f"--negatives must be at least 1, got {self.negatives}")
        if self.softmax_negatives < 1:
            raise ConfigError(
                f"--softmax-negatives must be at least 1, got {self.softmax_negatives}"
            )
        if self.refit not in ("all", "none"):
            raise ConfigError(f"--refit must be all or none, got {self.refit!r}")
        if self.sparse_embeddings not in SPARSE_MODES:
            raise ConfigError(
                f"--sparse-embeddings must be one of {', '.join(SPARSE_MODES)}, "
                f"got {self.sparse_embeddings!r}"
            )
        if self.known_negatives not in KNOWN_NEGATIVES:
            raise ConfigError(
                f"--known-negatives must be one of {', '.join(KNOWN_NEGATIVES)}, "
                f"got {self.known_negatives!r}"
            )
        if self.history_windows not in HISTORY_WINDOWS:
            raise ConfigError(
                f"--history-windows must be one of {', '.join(HISTORY_WINDOWS)}, "
                f"got {self.history_windows!r}"
            )
        if self.sampling not in SAMPLINGS:
            raise ConfigError(
                f"--sampling must be one of {', '.join(SAMPLINGS)}, got {self.sampling!r}"
            )
        if self.recency_half_life < 0:
            raise ConfigError(
                f"--recency-half-life must be >= 0 (0 = off), got {self.recency_half_life}"
            )
        if not 0.0 < self.recency_floor <= 1.0:
            raise ConfigError(f"--recency-floor must be in (0, 1], got {self.recency_floor}")
        if self.catalogue_weight < 0:
            raise ConfigError(
                f"--catalogue-weight must be >= 0 (0 = off), got {self.catalogue_weight}"
            )
        if self.patience is not None and self.patience < 1:
            raise ConfigError(f"--patience must be at least 1, got {self.patience}")
        if self.early_stop is not None and self.early_stop.lower() == "none":
            self.early_stop = None
        if self.early_stop is not None and self.early_stop.lower() != "auto":
            name, _, k = self.early_stop.lower().partition("@")
            if (
                name not in STOP_METRICS
                or (name in AT_K_METRICS) != bool(k)
                or (k and not (k.isdigit() and int(k) >= 1))
            ):
                raise ConfigError(
                    f"--early-stop {self.early_stop!r} is not a validation metric; use one of "
                    "hr@K, ndcg@K, recall@K, precision@K, map@K, mrr, auc, accuracy, loss"
                )
        if self.early_stop is not None:
            self.early_stop = self.early_stop.lower()
            _, _, k = self.early_stop.partition("@")
            if k and int(k) not in self.ks:
                self.ks = (*self.ks, int(k))
        if self.checkpoint_every < 0:
            raise ConfigError(
                f"--checkpoint-every must be >= 0 (0 = no checkpoints), got {self.checkpoint_every}"
            )
        if self.amp not in AMP_MODES:
            raise ConfigError(f"--amp must be one of {', '.join(AMP_MODES)}, got {self.amp!r}")
        if not 0 <= self.num_threads <= MAX_THREADS:
            raise ConfigError(
                f"--threads must be in 0..{MAX_THREADS} (0 = PyTorch default), got "
                f"{self.num_threads}"
            )
