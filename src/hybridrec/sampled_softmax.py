"""A softmax over the item catalogue whose cost does not grow with the catalogue.

Ranking every item for a user is what a recommender is judged on, so a softmax of each
positive against the whole catalogue is a strong training signal (it is what pushes a
positive above the *popular* items it competes with). Exactly, it costs ``O(items)`` per
positive. Here each batch draws ``S`` items shared by all its rows from a proposal ``Q``
(smoothed item popularity) and corrects every logit by ``log(S * Q(item))``, the expected
number of times the item was drawn, so that the negatives' ``sum(exp(logit))`` is an
importance-sampling estimate of the catalogue's partition function: the sampled softmax of
Bengio & Senecal (2008) and Jean et al. (2015, "On Using Very Large Target Vocabulary for
Neural Machine Translation"), with the log-Q correction that Yi et al. (2019,
"Sampling-Bias-Corrected Neural Modeling for Large Corpus Item Recommendations") apply to
in-batch negatives and TensorFlow's ``sampled_softmax_loss`` applies to sampled ones. The
positive keeps its own logit and a drawn item equal to a row's positive is masked for that
row ("accidental hits"), so as ``S`` grows the loss tends to the exact softmax
cross-entropy (tested). Sharing the draws across the batch turns the negatives' scores into
one ``(rows, S)`` matrix product.

When the catalogue has no more than ``S`` items, sampling would save nothing: the loss is
then the exact softmax over every item (unknown row 0 excluded), so small catalogues keep
the exact objective and large ones a bounded-cost estimate of it.

A row may also name items it already knows (:class:`KnownItems`: its user's training items):
those are not counted among its negatives, exact or sampled, since a ranking never
recommends them; spending the softmax on pushing them down would train for a question the
recommender is never asked (on MovieLens-100K's val split, 5 seeds, sasrec's full HR@10 /
NDCG@10 rose from 0.223 / 0.117 to 0.236 / 0.123 with them excluded; docs/benchmarks.md).

Item vectors are always looked up through the embedding module (never ``.weight``), so the
gradient of an item table is sparse when the table is (``nn.Embedding(sparse=True)``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from hybridrec.data.encoding import UNKNOWN_INDEX

#: Exponent on item counts in the proposal: 1 = popularity, 0 = uniform.
PROPOSAL_POWER = 1.0


class SharedNegatives:
    """The shared negatives of a sampled softmax over ``num_items`` items.

    Args:
        item_counts: (I,) training positives per item index (row 0, unknown, is ignored).
        num_negatives: ``S``, items drawn per batch; a catalogue of at most ``S`` known
            items is used whole (exact softmax).
        power: the proposal is ``(count + 1) ** power`` (1 = popularity, 0 = uniform).
        exact: force the exact (True) or sampled (False) form; default: exact when the
            catalogue has at most ``num_negatives`` known items.

    Example:
        >>> neg = SharedNegatives(torch.tensor([0, 5, 1, 1]), num_negatives=8)
        >>> neg.exact, neg.candidates().tolist()
        (True, [1, 2, 3])
        >>> big = SharedNegatives(torch.ones(1000), num_negatives=16)
        >>> big.exact, big.candidates().shape
        (False, torch.Size([16]))
    """

    def __init__(
        self,
        item_counts: torch.Tensor,
        num_negatives: int,
        power: float = PROPOSAL_POWER,
        exact: bool | None = None,
    ) -> None:
        num_items = len(item_counts)
        if num_items < 2:
            raise ValueError("a softmax over items needs at least one known item")
        self.num_items = num_items
        self.num_negatives = num_negatives
        self.exact = num_negatives >= num_items - 1 if exact is None else exact
        weights = (item_counts.double().clamp(min=0) + 1.0) ** power
        weights[UNKNOWN_INDEX] = 0.0
        probs = weights / weights.sum()
        self._cdf = torch.cumsum(probs, 0).float()
        self._cdf[-1] = 1.0  # no draw past the end through rounding
        # log of the expected number of draws of each item per batch
        self._log_expected = torch.log(probs * num_negatives).float()
        # an item's column among a batch's candidates (-1: not one): see known_bias
        self._lookup = torch.full((num_items,), -1, dtype=torch.int32)

    def to(self, device: torch.device) -> SharedNegatives:
        self._cdf = self._cdf.to(device)
        self._log_expected = self._log_expected.to(device)
        self._lookup = self._lookup.to(device)
        return self

    @torch.compiler.disable  # a draw, not arithmetic; under --compile's dynamic shapes the
    # draw count would become symbolic, which torch.rand rejects
    def candidates(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """This batch's candidate items: all known items when exact, else ``S`` draws from
        ``Q`` (with replacement; the global RNG unless ``generator`` is given)."""
        device = self._cdf.device
        if self.exact:
            return torch.arange(1, self.num_items, device=device)
        u = torch.rand(self.num_negatives, generator=generator).to(device)
        drawn = torch.searchsorted(self._cdf, u, right=True)
        return drawn.clamp_(1, self.num_items - 1)

    def loss(
        self,
        queries: torch.Tensor,
        items: nn.Embedding,
        targets: torch.Tensor,
        weight: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        count_hits: bool = True,
        known: KnownItems | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(mean cross-entropy, correct top-1 count)`` of ``targets`` (N,) given
        ``queries`` (N, D) whose dot product with ``items`` rows is the logit.

        ``weight`` (N,) scales each row's loss (rows weigh 1 without it). The count is
        ``None`` with ``count_hits=False``: finding each row's top logit costs as much as the
        softmax itself, so a caller that does not report it should not pay for it.
        ``known``: items that are not a row's negatives (its own target aside).
        """
        candidates = self.candidates(generator)
        if self.exact:
            cand_vectors = items(candidates)  # (I - 1, D)
            labels = targets - 1
            if known is None:
                logits = queries @ cand_vectors.T  # (N, I - 1), column j = item j + 1
            else:  # known items ride in the product as a bias (a masked fill cost 3x more)
                excluded = known_bias(candidates, known, self._lookup)
                excluded[torch.arange(len(labels), device=excluded.device), labels] = 0.0
                logits = torch.addmm(excluded, queries, cand_vectors.T)
            losses = F.cross_entropy(logits, labels, reduction="none")
            hits = (logits.detach().argmax(1) == labels).sum() if count_hits else None
        else:
            positive = (queries * items(targets)).sum(-1)  # (N,)
            # Popular items are drawn many times: score each once and count it as often as
            # it was drawn (+ log count), the same sum at ~55% of the products at ML-20M's
            # shape. The logits less log(S * Q) ride in the matrix product.
            candidates, counts = torch.unique(candidates, return_counts=True)
            bias = counts.float().log_() - self._log_expected[candidates]
            if known is not None:
                bias = known_bias(candidates, known, self._lookup).add_(bias)
            negative = torch.addmm(bias, queries, items(candidates).T)  # (N, distinct)
            rows, cols = accidental_hits(candidates, targets)
            lowest = torch.finfo(negative.dtype).min
            negative.index_put_((rows, cols), negative.new_tensor(lowest))
            # log(e^p + sum e^n) - p, without building the (N, S + 1) logits
            losses = F.softplus(_LogSumExp.apply(negative) - positive)
            hits = None
            if count_hits:
                hits = (positive.detach() >= negative.detach().max(1).values).sum()
        loss = losses.mean() if weight is None else (losses * weight).mean()
        return loss, hits


class _LogSumExp(torch.autograd.Function):
    """Row-wise ``logsumexp`` of a 2-D tensor that keeps its softmax for the backward pass.

    ``torch.logsumexp`` recomputes the exponentials in its backward; saving the softmax
    instead makes the loss's forward and backward over the ``(N, S)`` logits about 1.8x
    faster on the CPU, and it is most of the sampled softmax's non-matmul cost. The sum of
    exponentials is read off the softmax (its largest entry is ``1 / sum``) rather than
    computed beside it: 0.47 ms against 0.65 ms at a default batch's (455, 1130) logits.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        if dtype not in (torch.float32, torch.float64):  # bf16/fp16 under autocast
            x = x.float()
        probs = torch.softmax(x, 1)  # one fused pass: ~0.6x the time of exp alone here
        ctx.dtype = dtype
        ctx.save_for_backward(probs)
        # the largest probability, at the largest logit, is 1 / sum(exp(x - max))
        return x.amax(1) - probs.amax(1).log_()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (probs,) = ctx.saved_tensors
        return (probs * grad[:, None]).to(ctx.dtype)


def accidental_hits(
    candidates: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rows, columns)`` where ``candidates[column] == targets[row]``: the drawn negatives
    that are the row's own positive. Found by sorting the ``S`` candidates and searching
    the ``N`` targets, ``O((S + N) log S)``, instead of comparing all ``N x S`` pairs.

    Example:
        >>> accidental_hits(torch.tensor([5, 3, 5]), torch.tensor([5, 4, 3]))
        (tensor([0, 0, 2]), tensor([0, 2, 1]))
    """
    ordered, order = torch.sort(candidates, stable=True)
    first = torch.searchsorted(ordered, targets)
    counts = torch.searchsorted(ordered, targets, right=True) - first
    rows = torch.repeat_interleave(torch.arange(len(targets), device=targets.device), counts)
    # position of each hit within its row's run of equal candidates
    starts = torch.cumsum(counts, 0) - counts
    within = torch.arange(len(rows), device=targets.device) - starts[rows]
    return rows, order[first[rows] + within]


class KnownItems(NamedTuple):
    """Items each row of a softmax already knows. Rows fall into groups (a user, a history
    window), and the known items are listed per group as ``(group, item)`` pairs, so that a
    user with thousands of items costs one entry each, not one per row and item."""

    #: (N,) the group of each row, in ``0 .. num_groups - 1``
    group: torch.Tensor
    #: (M,) the group of each known item
    item_group: torch.Tensor
    #: (M,) the known items (0 = padding, ignored)
    items: torch.Tensor
    num_groups: int


#: The logit of an item that is not a row's negative: its exponential is 0 beside any real
#: logit in every training dtype (float16 included), yet finite, so that a row left with no
#: negative at all gets a finite loss and gradient, not NaN.
EXCLUDED_LOGIT = -30000.0


def known_bias(candidates: torch.Tensor, known: KnownItems, lookup: torch.Tensor) -> torch.Tensor:
    """``(N, C)`` float32 bias: :data:`EXCLUDED_LOGIT` where ``candidates[c]`` (distinct
    items) is one of row ``n``'s known items, else 0; added to the logits by their matrix
    product's ``addmm``.

    ``lookup`` is an item-indexed table of -1s: the candidates' columns are written into it,
    each known item reads its column in one gather (a binary search per known item cost
    several times more at ML-20M's shape), and the -1s are put back. The bias is built once
    per group, then its rows are copied out per row.

    Example:
        >>> known = KnownItems(torch.tensor([0, 0, 1]), torch.tensor([0, 0, 0, 1, 1]),
        ...                    torch.tensor([0, 3, 7, 2, 5]), num_groups=2)
        >>> lookup = torch.full((8,), -1)
        >>> (known_bias(torch.tensor([2, 3, 7]), known, lookup) < 0).int().tolist()
        [[0, 1, 1], [0, 1, 1], [1, 0, 0]]
    """
    width = len(candidates)
    lookup[candidates] = torch.arange(width, dtype=lookup.dtype, device=lookup.device)
    cols = lookup[known.items]
    lookup[candidates] = -1
    # items not among the candidates go to a spare last entry, dropped after: no
    # data-dependent shapes, so no wait for the device on a GPU
    dump = known.num_groups * width
    flat = torch.where(cols >= 0, known.item_group * width + cols, dump)
    bias = torch.zeros(dump + 1, device=cols.device)
    bias[flat] = EXCLUDED_LOGIT
    return bias[:dump].view(known.num_groups, width).index_select(0, known.group)
