"""The authors' linear-probe classifier (``vatt.tasks.linear_probe.AuthorsProbe`` and friends).

The authors' linear evaluation (TF release, utils/eval/evaluators.py): Dense(128) -> Dropout(0.9) ->
Dense(C, softmax, L2(0.1) on its kernel), glorot_normal kernels, zero biases, Adam(5e-4, eps 1e-7),
batch 64, 1000 epochs, test probabilities averaged over the views of each video.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vatt.tasks.linear_probe import AuthorsProbe, authors_probe, fit_authors_probe


def test_a_fit_runs_on_one_math_thread_and_gives_the_callers_count_back(monkeypatch):
    """The probe's ops are tiny: two threads on a busy 2-core machine only wait on each other."""
    import vatt.tasks.linear_probe as lp

    seen, train = [], lp._train
    monkeypatch.setattr(lp, "_train", lambda *a: (seen.append(torch.get_num_threads()), train(*a)))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        lp.fit_authors_probe(torch.randn(8, 3), torch.arange(8) % 2, 2, epochs=1)
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def blobs(means: torch.Tensor, per_class: int, std: float, seed: int, views: int = 0) -> tuple[torch.Tensor, ...]:
    """Gaussian blobs around ``means`` ``[C, D]``: ``[N, D]`` (``views`` 0) or ``[N, views, D]`` samples, labels."""
    g = torch.Generator().manual_seed(seed)
    c, d = means.shape
    y = torch.arange(c).repeat_interleave(per_class)
    shape = (len(y), d) if views == 0 else (len(y), views, d)
    x = torch.randn(shape, generator=g) * std + (means[y] if views == 0 else means[y][:, None])
    return x, y


def nearest_mean_top1(train_x, train_y, test_x, test_y, num_classes: int, std: float) -> float:
    """Hand-built reference: posterior of isotropic Gaussians around the training class means, averaged over views."""
    means = torch.stack([train_x[train_y == c].mean(0) for c in range(num_classes)])
    sq_dist = ((test_x[:, :, None, :] - means) ** 2).sum(-1)  # [M, V, C]
    probs = torch.softmax(-sq_dist / (2 * std**2), dim=-1).mean(1)
    return float((probs.argmax(-1) == test_y).float().mean())


def params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# --------------------------------------------------------------------------- 1. the network


def test_network_parts_penalty_and_init():
    g = torch.Generator().manual_seed(0)
    probe = AuthorsProbe(32, 5, generator=g)
    assert isinstance(probe.hidden, torch.nn.Linear) and isinstance(probe.cls, torch.nn.Linear)
    assert (probe.hidden.in_features, probe.hidden.out_features) == (32, 128)
    assert (probe.cls.in_features, probe.cls.out_features) == (128, 5)
    assert probe.dropout == 0.9 and probe.l2 == 0.1
    assert probe.hidden.bias is not None and probe.cls.bias is not None
    assert not probe.hidden.bias.any() and not probe.cls.bias.any()
    assert sum(p.numel() for p in probe.parameters()) == 32 * 128 + 128 + 128 * 5 + 5

    x = torch.randn(7, 32, generator=g)
    # eval: no activation, no dropout: two affine maps
    probe.eval()
    expected = (x @ probe.hidden.weight.T + probe.hidden.bias) @ probe.cls.weight.T + probe.cls.bias
    torch.testing.assert_close(probe(x), expected)
    assert probe(x).shape == (7, 5)
    # training: hidden units kept where rand >= 0.9, scaled by 1 / (1 - 0.9)
    probe.train()
    g_mask = torch.Generator().manual_seed(5)
    keep = torch.rand((7, 128), generator=torch.Generator().manual_seed(5)) >= 0.9
    h = (x @ probe.hidden.weight.T + probe.hidden.bias) * keep / 0.1
    torch.testing.assert_close(probe(x, generator=g_mask), h @ probe.cls.weight.T + probe.cls.bias)
    assert 0.03 < keep.float().mean() < 0.2

    # L2: 0.1 * sum of the last kernel's squares, nothing else
    n = 128 * 5
    with torch.no_grad():
        probe.cls.weight.copy_(torch.arange(n, dtype=torch.float32).reshape(5, 128))
        probe.hidden.weight.fill_(100.0)
        probe.hidden.bias.fill_(100.0)
        probe.cls.bias.fill_(100.0)
    sum_sq = (n - 1) * n * (2 * n - 1) / 6  # 0² + 1² + ... + (n-1)²
    assert probe.l2_penalty().item() == pytest.approx(0.1 * sum_sq, rel=1e-6)
    probe.l2 = 0.5
    assert probe.l2_penalty().item() == pytest.approx(0.5 * sum_sq, rel=1e-6)
    probe.l2_penalty().backward()
    assert probe.hidden.weight.grad is None and probe.cls.bias.grad is None
    torch.testing.assert_close(probe.cls.weight.grad, 2 * 0.5 * probe.cls.weight.detach())

    # glorot_normal: std sqrt(2 / (fan_in + fan_out)), truncated at 2 std of the underlying normal
    big = AuthorsProbe(3000, 1000, hidden=500, generator=torch.Generator().manual_seed(1))
    for w, fan_in, fan_out in ((big.hidden.weight, 3000, 500), (big.cls.weight, 500, 1000)):
        target = math.sqrt(2.0 / (fan_in + fan_out))
        assert w.std().item() == pytest.approx(target, rel=0.02)
        assert abs(w.mean().item()) < 0.01 * target
        cut = 2 * target / 0.87962566103423978
        assert w.abs().max().item() <= cut * (1 + 1e-6)
        assert w.abs().max().item() > 0.95 * cut  # truncated at 2 std, not narrower


# --------------------------------------------------------------------------- 2. against a hand-built reference


def test_matches_nearest_mean_on_separable_and_overlapping_blobs():
    d, c = 16, 4
    means = torch.zeros(c, d)
    means[torch.arange(c), torch.arange(c)] = 6.0
    train_x, train_y = blobs(means, 50, 1.0, seed=0)
    test_x, test_y = blobs(means, 10, 1.0, seed=1, views=3)
    ref = nearest_mean_top1(train_x, train_y, test_x, test_y, c, 1.0)
    out = authors_probe(train_x, train_y, test_x, test_y, c, epochs=200)
    assert ref == 1.0
    assert out["top1"] == 1.0 and out["top5"] == 1.0 and out["epochs"] == 200.0
    assert set(out) == {"top1", "top5", "epochs"}

    overlap = means / 6.0  # means sqrt(2) apart, unit noise: roughly half the views are misclassified
    train_x, train_y = blobs(overlap, 50, 1.0, seed=2)
    test_x, test_y = blobs(overlap, 100, 1.0, seed=3, views=3)
    ref = nearest_mean_top1(train_x, train_y, test_x, test_y, c, 1.0)
    out = authors_probe(train_x, train_y, test_x, test_y, c, epochs=200)
    assert 0.4 < ref < 0.9  # the task is neither trivial nor hopeless
    assert out["top1"] == pytest.approx(ref, abs=0.05)


# --------------------------------------------------------------------------- 3. determinism


def test_seeded_and_leaves_the_global_rng_alone():
    means = torch.eye(3, 8) * 3.0
    x, y = blobs(means, 20, 1.0, seed=0)
    test_x, test_y = blobs(means, 5, 1.0, seed=1, views=2)
    state = torch.get_rng_state()
    a = params(fit_authors_probe(x, y, 3, epochs=5, seed=3))
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(12345)  # another global state must not matter
    b = params(fit_authors_probe(x, y, 3, epochs=5, seed=3))
    other = params(fit_authors_probe(x, y, 3, epochs=5, seed=4))
    assert a.keys() == b.keys() == other.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(not torch.equal(a[k], other[k]) for k in a)

    state = torch.get_rng_state()
    m1 = authors_probe(x, y, test_x, test_y, 3, epochs=5, seed=3)
    m2 = authors_probe(x, y, test_x, test_y, 3, epochs=5, seed=3)
    assert m1 == m2
    assert torch.equal(torch.get_rng_state(), state)


# --------------------------------------------------------------------------- 4. the optimisation, by hand


def _hand_adam(init: AuthorsProbe, batches, x, y, lr: float, l2: float) -> dict[str, torch.Tensor]:
    """Adam(lr, betas (0.9, 0.999), eps 1e-7) on mean CE + l2 * sum(W2²), over the index ``batches``, dropout off."""
    w1, b1, w2, b2 = (p.detach().clone().requires_grad_() for p in
                      (init.hidden.weight, init.hidden.bias, init.cls.weight, init.cls.bias))
    opt = torch.optim.Adam([w1, b1, w2, b2], lr=lr, betas=(0.9, 0.999), eps=1e-7)
    for idx in batches:
        logits = (x[idx] @ w1.T + b1) @ w2.T + b2
        ce = -logits.log_softmax(-1)[torch.arange(len(idx)), y[idx]].mean()
        loss = ce + l2 * (w2**2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {"hidden.weight": w1.detach(), "hidden.bias": b1.detach(), "cls.weight": w2.detach(),
            "cls.bias": b2.detach()}


def test_adam_steps_match_a_hand_computed_reference():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(10, 5, generator=g), torch.randint(0, 3, (10,), generator=g)
    lr, seed = 1e-2, 7
    init = AuthorsProbe(5, 3, dropout=0.0, generator=torch.Generator().manual_seed(seed))

    # one full batch (batch_size >= N), one epoch: a single step, which for Adam is -lr * g / (|g| + eps)
    fit = params(fit_authors_probe(x, y, 3, epochs=1, batch_size=16, lr=lr, dropout=0.0, seed=seed))
    ref = _hand_adam(init, [torch.arange(10)], x, y, lr, 0.1)
    w1, b1, w2, b2 = (p.detach().clone().requires_grad_() for p in
                      (init.hidden.weight, init.hidden.bias, init.cls.weight, init.cls.bias))
    loss = F.cross_entropy((x @ w1.T + b1) @ w2.T + b2, y) + 0.1 * (w2**2).sum()
    loss.backward()
    for name, p in zip(("hidden.weight", "hidden.bias", "cls.weight", "cls.bias"), (w1, b1, w2, b2)):
        torch.testing.assert_close(fit[name], ref[name], rtol=0, atol=1e-6)
        step = -lr * p.grad / (p.grad.abs() + 1e-7)
        torch.testing.assert_close(fit[name], p.detach() + step, rtol=0, atol=1e-6)
    assert not torch.equal(fit["cls.weight"], init.cls.weight)

    # three full-batch steps: the L2 term must be in the loss (without it the weights differ)
    fit = params(fit_authors_probe(x, y, 3, epochs=3, batch_size=64, lr=lr, dropout=0.0, seed=seed))
    ref = _hand_adam(init, [torch.arange(10)] * 3, x, y, lr, 0.1)
    no_l2 = _hand_adam(init, [torch.arange(10)] * 3, x, y, lr, 0.0)
    for name in ref:
        torch.testing.assert_close(fit[name], ref[name], rtol=0, atol=1e-6)
    assert (fit["cls.weight"] - no_l2["cls.weight"]).abs().max() > 1e-4

    # mini-batches of 4: the epoch's permutation (drawn after the init) in batches 4, 4, 2 (last one kept)
    fit = params(fit_authors_probe(x, y, 3, epochs=2, batch_size=4, lr=lr, dropout=0.0, seed=seed))
    gen = torch.Generator().manual_seed(seed)
    AuthorsProbe(5, 3, dropout=0.0, generator=gen)  # advance the generator past the init, as the fit does
    batches = []
    for _ in range(2):
        order = torch.randperm(10, generator=gen)
        batches += [order[0:4], order[4:8], order[8:10]]
    ref = _hand_adam(init, batches, x, y, lr, 0.1)
    dropped = _hand_adam(init, batches[:2] + batches[3:5], x, y, lr, 0.1)  # as if the partial batch were dropped
    for name in ref:
        torch.testing.assert_close(fit[name], ref[name], rtol=0, atol=1e-5)
    assert (fit["cls.weight"] - dropped["cls.weight"]).abs().max() > 1e-4


# --------------------------------------------------------------------------- 5. views averaging


def test_top1_comes_from_the_mean_of_the_view_probabilities():
    d, c = 8, 3
    means = torch.eye(c, d) * 4.0
    train_x, train_y = blobs(means, 60, 0.5, seed=0)
    kw = dict(epochs=100, seed=2)
    model = fit_authors_probe(train_x, train_y, c, **kw)  # the same model authors_probe trains
    m0, m1 = means[0], means[1]

    def probs(v: torch.Tensor) -> torch.Tensor:
        return model.predict_proba(v.reshape(-1, d)).reshape(*v.shape[:-1], c)

    # a point on the 0-1 segment that is class 0, but only just (p0 - p1 about 0.1), by bisection
    lo, hi = 0.0, 1.0
    for _ in range(40):
        t = (lo + hi) / 2
        p = probs(m0 + t * (m1 - m0))
        lo, hi = (t, hi) if p[0] - p[1] > 0.1 else (lo, t)
    near0 = m0 + lo * (m1 - m0)
    sure1 = m1 + 2.0 * (m1 - m0)  # far on class 1's side
    far0 = m0 + 12.0 * (m0 - m1)  # very far on class 0's side: saturated probability, huge logits
    # video A: one sure class-1 view, two barely-class-0 views -> majority vote says 0, mean probability 1
    # video B: one far class-0 view, two sure class-1 views -> mean logit (= logit of mean feature) says 0
    test_x = torch.stack([torch.stack([near0, near0, sure1]), torch.stack([far0, sure1, sure1])])
    test_y = torch.tensor([1, 1])

    p = probs(test_x)  # [M, V, C]
    assert (p.mean(1).argmax(-1) == test_y).all()  # averaged probabilities: both right
    assert p.mean(1)[0, 1] - p.mean(1)[0, 0] > 0.05 and p.mean(1)[1, 1] - p.mean(1)[1, 0] > 0.05
    votes = p.argmax(-1)
    assert torch.mode(votes[0]).values.item() == 0  # majority vote: A wrong
    with torch.no_grad():
        logit_mean = model(test_x.reshape(-1, d)).reshape(2, 3, c).mean(1)
    assert logit_mean[1].argmax().item() == 0  # averaged logits: B wrong
    assert (p[:, 0].argmax(-1) != test_y).all()  # the first view alone: both wrong
    assert p.amax(1)[1].argmax().item() == 0  # max over views: B wrong

    out = authors_probe(train_x, train_y, test_x, test_y, c, **kw)
    assert out["top1"] == 1.0


# --------------------------------------------------------------------------- 6. bad input


@pytest.mark.parametrize("change, match", [
    (dict(x=torch.zeros(12)), "train_x"),
    (dict(x=torch.zeros(12, 4, 1)), "train_x"),
    (dict(x=torch.zeros(0, 4), y=torch.zeros(0, dtype=torch.long)), "train_x"),
    (dict(y=torch.zeros(11, dtype=torch.long)), "train_y"),
    (dict(y=torch.zeros(12)), "train_y"),
    (dict(y=torch.full((12,), 3)), r"labels outside \[0, 3\)"),
    (dict(y=torch.full((12,), -1)), r"labels outside \[0, 3\)"),
    (dict(epochs=0), "epochs"),
    (dict(dropout=1.0), "dropout"),
    (dict(dropout=-0.1), "dropout"),
    (dict(batch_size=0), "batch_size"),
    (dict(num_classes=0), "num_classes"),
])
def test_fit_rejects_bad_input(change, match):
    args = dict(x=torch.zeros(12, 4), y=torch.zeros(12, dtype=torch.long), num_classes=3, epochs=1)
    args.update(change)
    with pytest.raises(ValueError, match=match):
        fit_authors_probe(**args)


@pytest.mark.parametrize("change, match", [
    (dict(test_x=torch.zeros(5, 4)), "test_x"),
    (dict(test_x=torch.zeros(5, 2, 3)), "feature dims"),
    (dict(test_y=torch.zeros(4, dtype=torch.long)), "test_y"),
    (dict(test_y=torch.full((5,), 7)), r"labels outside \[0, 3\)"),
    (dict(train_y=torch.zeros(11, dtype=torch.long)), "train_y"),
    (dict(epochs=0), "epochs"),
])
def test_authors_probe_rejects_bad_input(change, match):
    args = dict(train_x=torch.zeros(12, 4), train_y=torch.zeros(12, dtype=torch.long), test_x=torch.zeros(5, 2, 4),
                test_y=torch.zeros(5, dtype=torch.long), num_classes=3, epochs=1)
    args.update(change)
    with pytest.raises(ValueError, match=match):
        authors_probe(**args)
