"""Linear probes on frozen features (paper §4, linear evaluation; Table 5; docs/vatt.md §7).

The protocol of :func:`linear_probe` (``probe.classifier=logistic``, the default; docs/deviations.md):
- features: the pooled ``[AGG]`` output of the modality's Transformer (before the
  FAC heads) of a frozen backbone (``probe.features`` can pick ``va``/``vt``);
- training: one un-augmented, centred clip per video; test: 4 windows linearly
  spaced over the video, class probabilities averaged per video;
- classifier: multinomial logistic regression (full-batch L-BFGS) on standardised
  features; its L2 strength is chosen on a held-out part of the training split
  from a log-spaced grid, then the classifier is refit on all training videos;
- every official split/fold is evaluated and the mean is reported.

:func:`authors_probe` (``probe.classifier=authors``; same first arguments, same video-level metrics) is the
classifier of the authors' TF release (utils/eval/evaluators.py), the one the paper's Table 5 numbers come
from: a 128-unit linear layer, dropout 0.9 and a softmax layer with an L2 penalty, trained with Adam on raw
features (:class:`AuthorsProbe`, :func:`fit_authors_probe`).
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F

from vatt.metrics import average_views, topk_accuracy
from vatt.progress import track

log = logging.getLogger(__name__)

L2_GRID = tuple(10.0**e for e in range(-6, 1))  # strength of the mean-squared weight penalty


def standardise(train: torch.Tensor, *others: torch.Tensor) -> list[torch.Tensor]:
    """Zero mean, unit variance per dimension, with the training set's statistics."""
    mean, std = train.mean(0), train.std(0).clamp(min=1e-6)
    return [(x - mean) / std for x in (train, *others)]


def fit_logistic_regression(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float, max_iter: int = 300
) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise mean cross-entropy + ``l2``·‖W‖² over ``W`` ``[D, C]``, ``b`` ``[C]`` (float64, L-BFGS).

    Convex, so the result depends only on the data and ``l2``, not on the start.
    """
    x, y = x.double(), y.long()
    w = torch.zeros(x.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(x @ w + b, y) + l2 * w.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach(), b.detach()


def predict_proba(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.softmax(x.double() @ w + b, dim=-1)


def select_l2(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, grid: tuple[float, ...] = L2_GRID, holdout: float = 0.2,
    seed: int = 0,
) -> tuple[float, dict[float, float]]:
    """The L2 strength with the best top-1 on a held-out ``holdout`` fraction of the training set (ties: stronger)."""
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(y), generator=g)
    n_val = max(1, int(round(holdout * len(y))))
    val, fit = order[:n_val], order[n_val:]
    x_fit, x_val = standardise(x[fit], x[val])
    scores = {}
    for l2 in grid:
        w, b = fit_logistic_regression(x_fit, y[fit], num_classes, l2)
        scores[l2] = float((predict_proba(x_val, w, b).argmax(-1) == y[val]).float().mean())
    best = max(scores.items(), key=lambda kv: (kv[1], kv[0]))[0]
    return best, scores


def linear_probe(
    train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, num_classes: int,
    grid: tuple[float, ...] = L2_GRID, seed: int = 0,
) -> dict[str, float]:
    """Train on ``train_x`` ``[N, D]`` (one view per video), test on ``test_x`` ``[M, V, D]`` (V views per video).

    Returns video-level ``top1``/``top5`` (probabilities averaged over the views) and the chosen ``l2``.
    """
    if test_x.ndim != 3:
        raise ValueError(f"test features must be [videos, views, dim], got {list(test_x.shape)}")
    l2, scores = select_l2(train_x, train_y, num_classes, grid, seed=seed)
    m, v, d = test_x.shape
    x_train, x_test = standardise(train_x, test_x.reshape(m * v, d))
    w, b = fit_logistic_regression(x_train, train_y, num_classes, l2)
    probs = average_views(predict_proba(x_test, w, b), v)
    metrics = topk_accuracy(probs, test_y, ks=(1, 5))
    metrics["l2"] = l2
    log.info("linear probe: l2=%g (held-out top-1 %s), test top-1 %.4f", l2,
             " ".join(f"{k:g}:{s:.3f}" for k, s in scores.items()), metrics["top1"])
    return metrics


def chance_top1(labels: torch.Tensor) -> float:
    """Top-1 of always answering the most frequent class (a floor to compare against)."""
    return float(torch.bincount(labels.long()).max()) / max(1, len(labels)) if len(labels) else math.nan


# --------------------------------------------------------------------------- the authors' classifier
#
# The authors' linear evaluation (TF release, utils/eval/evaluators.py: ``LinearClsHead`` and
# ``linear_classifier``) does not fit a logistic regression: it trains a small Keras network with Adam.
# The functions below restate it in plain PyTorch, so that ``authors_probe`` can stand in for
# ``linear_probe`` (same arguments first, same video-level metrics).

AUTHORS_HIDDEN = 128
AUTHORS_DROPOUT = 0.9
AUTHORS_L2 = 0.1
AUTHORS_LR = 5e-4
AUTHORS_BATCH = 64
AUTHORS_EPOCHS = 1000
AUTHORS_SEED = 1
KERAS_ADAM_EPS = 1e-7  # tf.keras.optimizers.Adam's default epsilon (PyTorch's is 1e-8)
# Keras' glorot_normal draws from a normal truncated at 2 std; dividing by this constant (the std of a
# unit normal truncated to [-2, 2]) makes the drawn values' std equal sqrt(2 / (fan_in + fan_out)).
_TRUNCATED_STD = 0.87962566103423978


def glorot_normal_(weight: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Keras' ``glorot_normal`` for a ``torch.nn.Linear`` weight ``[fan_out, fan_in]``, in place.

    A normal truncated at 2 of its std ``s = sqrt(2 / (fan_in + fan_out)) / 0.87962566103423978``, so that
    the truncated values have std ``sqrt(2 / (fan_in + fan_out))`` (Glorot & Bengio's), all within ``±2 s``.
    """
    fan_out, fan_in = weight.shape
    s = math.sqrt(2.0 / (fan_in + fan_out)) / _TRUNCATED_STD
    with torch.no_grad():
        return torch.nn.init.trunc_normal_(weight, std=s, a=-2 * s, b=2 * s, generator=generator)


class AuthorsProbe(torch.nn.Module):
    """The authors' linear-evaluation network (TF release, utils/eval/evaluators.py, ``LinearClsHead``).

    ``Linear(in_dim, hidden)`` (no activation) -> dropout (rate ``dropout``, training only) ->
    ``Linear(hidden, num_classes)``, whose softmax is the class probabilities. Both kernels start as
    Keras' ``glorot_normal`` (:func:`glorot_normal_`), both biases at zero. The network is linear in its
    input at test time; the hidden layer and the dropout only shape the training. The training loss
    adds ``l2 * sum(cls.weight ** 2)`` (:meth:`l2_penalty`, Keras' ``L2(0.1)`` regulariser of the last
    kernel only: not the first kernel, not the biases).

    ``generator`` draws the initial weights (the global RNG when ``None``; the layers are built without
    PyTorch's default initialisation, so with a generator the global RNG is not touched).
    """

    def __init__(self, in_dim: int, num_classes: int, hidden: int = AUTHORS_HIDDEN, dropout: float = AUTHORS_DROPOUT,
                 l2: float = AUTHORS_L2, generator: torch.Generator | None = None) -> None:
        super().__init__()
        for name, value in (("in_dim", in_dim), ("num_classes", num_classes), ("hidden", hidden)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if not l2 >= 0.0:
            raise ValueError(f"l2 must be >= 0, got {l2!r}")
        # skip_init: no kaiming_uniform_ draw from the global RNG before the weights are set below
        self.hidden = torch.nn.utils.skip_init(torch.nn.Linear, int(in_dim), int(hidden))
        self.cls = torch.nn.utils.skip_init(torch.nn.Linear, int(hidden), int(num_classes))
        self.dropout = float(dropout)
        self.l2 = float(l2)
        for layer in (self.hidden, self.cls):
            glorot_normal_(layer.weight, generator)
            torch.nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Logits ``[B, C]`` of features ``x`` ``[B, in_dim]``.

        In training mode the hidden units are dropped with probability ``dropout`` and the kept ones
        scaled by ``1 / (1 - dropout)`` (as Keras' ``Dropout``); the keep mask is
        ``torch.rand([B, hidden], generator=generator) >= dropout`` (the global RNG when ``None``).
        """
        h = self.hidden(x)
        if self.training and self.dropout > 0.0:
            keep = torch.rand(h.shape, generator=generator, dtype=h.dtype, device=h.device) >= self.dropout
            h = h * keep / (1.0 - self.dropout)
        return self.cls(h)

    def l2_penalty(self) -> torch.Tensor:
        """``l2 * sum(cls.weight ** 2)``: Keras' ``L2(l2)`` kernel regulariser of the last layer."""
        return self.l2 * self.cls.weight.square().sum()

    @torch.no_grad()
    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``[B, C]`` (softmax of the logits, no dropout whatever the mode)."""
        was_training = self.training
        self.eval()
        try:
            return torch.softmax(self(x.float()), dim=-1)
        finally:
            self.train(was_training)


def _check_features(x: torch.Tensor, y: torch.Tensor, num_classes: int, what: str) -> None:
    if int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{what}_x must be a non-empty 2-D [N, D] tensor, got shape {list(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{what}_x must be floating point, got {x.dtype}")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"{what}_y must be [N] with N = len({what}_x) = {x.shape[0]}, got shape {list(y.shape)}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise ValueError(f"{what}_y must hold integer class ids, got {y.dtype}")
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise ValueError(f"{what}_y has labels outside [0, {num_classes}): min {int(y.min())}, max {int(y.max())}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{what}_x has non-finite values")


def fit_authors_probe(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, epochs: int = AUTHORS_EPOCHS, batch_size: int = AUTHORS_BATCH,
    lr: float = AUTHORS_LR, hidden: int = AUTHORS_HIDDEN, dropout: float = AUTHORS_DROPOUT, l2: float = AUTHORS_L2,
    seed: int = AUTHORS_SEED,
) -> AuthorsProbe:
    """Train :class:`AuthorsProbe` on features ``x`` ``[N, D]`` and class ids ``y`` ``[N]`` as the authors do.

    The authors' linear evaluation (TF release, utils/eval/evaluators.py): raw features (no
    standardisation); Adam with ``lr`` 5e-4, betas (0.9, 0.999), eps 1e-7 (Keras' default); ``epochs``
    1000 passes over the training set, reshuffled before each, in batches of ``batch_size`` 64 with the
    last, partial batch kept (Keras does not drop it); the loss of each batch is its mean categorical
    cross-entropy plus ``l2`` 0.1 times the sum of the squared last kernel; dropout 0.9 on the hidden
    layer of ``hidden`` 128 units; seed 1.

    Runs on the CPU in float32 and returns the module in eval mode. Deterministic given ``seed``: one
    local ``torch.Generator`` seeded with it draws, in this order, the initial weights (the same as
    ``AuthorsProbe(D, num_classes, hidden, dropout, l2, generator=torch.Generator().manual_seed(seed))``),
    then each epoch's permutation and its batches' dropout masks; the global RNG is not used.
    (The TF run's random numbers cannot be reproduced, only their distributions.)
    """
    _check_features(x, y, num_classes, "train")
    if int(epochs) != epochs or epochs < 1:
        raise ValueError(f"epochs must be an integer >= 1, got {epochs!r}")
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if not lr > 0.0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
    x = x.detach().to("cpu", torch.float32).contiguous()
    y = y.detach().to("cpu", torch.long)
    batch_size = int(batch_size)
    g = torch.Generator().manual_seed(int(seed))
    model = AuthorsProbe(x.shape[1], num_classes, hidden, dropout, l2, generator=g)
    opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999), eps=KERAS_ADAM_EPS)
    model.train()
    threads = torch.get_num_threads()
    # batches of 64 x 128: more threads only wait on each other (a 200-epoch fit: 0.5 s on one thread, 4-15 s on
    # two beside another process)
    torch.set_num_threads(1)
    try:
        with torch.enable_grad():
            _train(model, opt, x, y, int(epochs), batch_size, g)
    finally:
        torch.set_num_threads(threads)
    return model.eval()


def _train(model: AuthorsProbe, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, epochs: int,
           batch_size: int, g: torch.Generator) -> None:
    n = len(y)
    for _ in track(range(epochs), epochs, f"authors' probe: epochs over {n} videos", log, every_s=30.0):
        order = torch.randperm(n, generator=g)
        xs, ys = x[order], y[order]  # one gather per epoch; the batches below are views
        for start in range(0, n, batch_size):
            xb, yb = xs[start:start + batch_size], ys[start:start + batch_size]
            loss = F.cross_entropy(model(xb, generator=g), yb) + model.l2_penalty()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def authors_probe(
    train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, num_classes: int,
    epochs: int = AUTHORS_EPOCHS, seed: int = AUTHORS_SEED, batch_size: int = AUTHORS_BATCH, lr: float = AUTHORS_LR,
) -> dict[str, float]:
    """The authors' linear evaluation (TF release, utils/eval/evaluators.py, ``linear_classifier``).

    Trains :func:`fit_authors_probe` on ``train_x`` ``[N, D]`` (one view per video, raw features), then
    tests on ``test_x`` ``[M, V, D]`` (V views per video) without dropout: the softmax probabilities of
    the views are averaged per video, and top-1/top-5 are taken on the averaged probabilities.
    Takes the same first arguments as :func:`linear_probe`; returns video-level ``top1``, ``top5`` and
    the ``epochs`` trained.
    """
    if test_x.ndim != 3:
        raise ValueError(f"test_x must be [videos, views, dim], got shape {list(test_x.shape)}")
    m, v, d = test_x.shape
    if m == 0 or v == 0 or d == 0:
        raise ValueError(f"test_x must be a non-empty [videos, views, dim] tensor, got shape {list(test_x.shape)}")
    if test_y.shape != (m,):
        raise ValueError(f"test_y must be [M] with M = len(test_x) = {m}, got shape {list(test_y.shape)}")
    _check_features(test_x.reshape(m * v, d), test_y.repeat_interleave(v), num_classes, "test")
    if train_x.ndim == 2 and train_x.shape[1] != d:
        raise ValueError(f"test_x has {d} feature dims, train_x has {train_x.shape[1]}")
    model = fit_authors_probe(train_x, train_y, num_classes, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)
    probs = average_views(model.predict_proba(test_x.reshape(m * v, d).to("cpu", torch.float32)), v)
    metrics = topk_accuracy(probs, test_y.cpu(), ks=(1, 5))
    metrics["epochs"] = float(epochs)
    log.info("authors' probe: %d epochs on %d videos (%d dims), test top-1 %.4f over %d videos x %d views",
             epochs, len(train_y), d, metrics["top1"], m, v)
    return metrics
