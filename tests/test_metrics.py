"""Evaluation metrics against hand-computed values and scikit-learn / scipy."""

import math

import pytest
import torch

from vatt.metrics import (
    WINDOW_MODES,
    average_views,
    multihot,
    multilabel_metrics,
    ranks_to_metrics,
    retrieval_metrics,
    retrieval_ranks,
    similarity_ranks,
    topk_accuracy,
    window_retrieval_metrics,
    window_similarity,
)


def test_ranks_and_recall_by_hand():
    gallery = torch.eye(4)
    # query 0 -> item 0 (rank 1); query 1 closest to item 2 then 1 (rank 2);
    # query 2 matches 3 best, then 0, then 2 (rank 3); query 3 -> item 3 (rank 1)
    query = torch.tensor(
        [[1.0, 0, 0, 0], [0, 0.5, 0.9, 0], [0.6, 0, 0.3, 0.9], [0, 0, 0, 1.0]]
    )
    assert retrieval_ranks(query, gallery).tolist() == [1, 2, 3, 1]
    m = retrieval_metrics(query, gallery, ks=(1, 2, 10))
    assert m["R@1"] == pytest.approx(0.5)
    assert m["R@2"] == pytest.approx(0.75)
    assert m["R@10"] == pytest.approx(1.0)
    assert m["MedR"] == pytest.approx(1.5)


def test_ties_count_against_the_query():
    assert retrieval_ranks(torch.ones(3, 2), torch.ones(3, 2)).tolist() == [3, 3, 3]


def test_random_embeddings_are_near_chance():
    torch.manual_seed(0)
    m = retrieval_metrics(torch.randn(500, 64), torch.randn(500, 64))
    assert m["R@10"] == pytest.approx(10 / 500, abs=0.02)


# ------------------------------------------------------------------ shared ranking code path


def test_similarity_ranks_count_ties_against_the_query():
    sim = torch.tensor([[0.5, 0.5, 0.1], [0.9, 0.2, 0.2], [0.3, 0.3, 0.3]])
    # row 0: match 0.5 ties with item 1 -> rank 2; row 1: match 0.2, items 0 (0.9) and 2 (tie) -> 3;
    # row 2: constant row -> last (3)
    assert similarity_ranks(sim).tolist() == [2, 3, 3]


def test_similarity_ranks_rejects_non_square():
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        similarity_ranks(torch.zeros(2, 3))


def test_ranks_to_metrics_median_of_even_count_is_mean_of_middle_two():
    m = ranks_to_metrics(torch.tensor([1, 2, 3, 10]))
    assert m == {"R@1": 0.25, "R@5": 0.75, "R@10": 1.0, "MedR": 2.5}


# ------------------------------------------------------------------ window retrieval

# N=3 clips of W=2 windows in D=2. Captions 0 and 1 are both (1, 1) (duplicate captions happen),
# caption 2 is (3, 4) ~ (0.6, 0.8). Windows (normalised): clip 0 = (1, 0), (0, 1);
# clip 1 = (1, 0), (1, 0); clip 2 = (0, 1), (0, 1). With a = 1/sqrt(2) ~ 0.7071:
#   mean_similarity (rows caption, cols clip): [[a, a, a], [a, a, a], [0.7, 0.6, 0.8]]
#     t2v ranks: 3 (three-way tie), 3 (tie), 1         -> R@1 1/3, MedR 3
#     v2t (columns): clip 0 [a, a, 0.7] -> 2, clip 1 [a, a, 0.6] -> 2, clip 2 [a, a, 0.8] -> 1
#   mean_embedding: clip 0 becomes (a, a), clip 1 (1, 0), clip 2 (0, 1):
#     [[1, a, a], [1, a, a], [1.4a ~ 0.99, 0.6, 0.8]]
#     t2v ranks: 1, 3 (below 1, tie with a), 2          -> R@1 1/3, MedR 2
#     v2t: clip 0 [1, 1, 0.99] -> 2 (tie), clip 1 [a, a, 0.6] -> 2, clip 2 [a, a, 0.8] -> 1
# Clip 0's first window is (4, 0): averaging unnormalised windows would give (2, 0.5)/|.|,
# whose similarity with caption 2 is ~0.78 < 0.8, and caption 2 would rank clip 2 first.
WIN_TEXT = torch.tensor([[1.0, 1.0], [1.0, 1.0], [3.0, 4.0]])
WIN_VIDEO = torch.tensor([[[4.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [2.0, 0.0]], [[0.0, 1.0], [0.0, 5.0]]])


def test_window_modes_give_different_ranks_with_pessimistic_ties():
    ranks = {m: similarity_ranks(window_similarity(WIN_TEXT, WIN_VIDEO, m)).tolist() for m in WINDOW_MODES}
    assert ranks == {"mean_similarity": [3, 3, 1], "mean_embedding": [1, 3, 2]}


def test_window_retrieval_metrics_text_to_video():
    m = window_retrieval_metrics(WIN_TEXT, WIN_VIDEO, "mean_similarity")
    assert m == pytest.approx({"R@1": 1 / 3, "R@5": 1.0, "R@10": 1.0, "MedR": 3.0})
    m = window_retrieval_metrics(WIN_TEXT, WIN_VIDEO, "mean_embedding", direction="t2v")
    assert m == pytest.approx({"R@1": 1 / 3, "R@5": 1.0, "R@10": 1.0, "MedR": 2.0})


def test_window_retrieval_metrics_video_to_text_ranks_captions_per_clip():
    for mode in WINDOW_MODES:
        assert similarity_ranks(window_similarity(WIN_TEXT, WIN_VIDEO, mode).T).tolist() == [2, 2, 1]
        m = window_retrieval_metrics(WIN_TEXT, WIN_VIDEO, mode, direction="v2t")
        assert m == pytest.approx({"R@1": 1 / 3, "R@5": 1.0, "R@10": 1.0, "MedR": 2.0})


def test_window_retrieval_with_one_window_equals_plain_retrieval():
    torch.manual_seed(0)
    text, video = torch.randn(20, 8), torch.randn(20, 8)
    plain = retrieval_metrics(text, video)
    for mode in WINDOW_MODES:
        assert window_retrieval_metrics(text, video[:, None], mode) == pytest.approx(plain)


def test_window_retrieval_rejects_unknown_mode_and_direction():
    with pytest.raises(ValueError, match="mode"):
        window_retrieval_metrics(WIN_TEXT, WIN_VIDEO, "max")
    with pytest.raises(ValueError, match="direction"):
        window_retrieval_metrics(WIN_TEXT, WIN_VIDEO, "mean_embedding", direction="a2v")


# ------------------------------------------------------------------ classification


def test_average_views_means_consecutive_rows_of_each_video():
    # N=2 videos, V=3 views, C=2, video-major
    scores = torch.tensor([[0.0, 3.0], [3.0, 6.0], [6.0, 0.0], [1.0, 1.0], [2.0, 2.0], [6.0, 0.0]])
    assert average_views(scores, 3).tolist() == [[3.0, 3.0], [3.0, 1.0]]


def test_average_views_rejects_rows_not_divisible_by_views():
    with pytest.raises(ValueError, match=r"\(5, 2\)"):
        average_views(torch.zeros(5, 2), 3)


def test_topk_accuracy_by_hand():
    logits = torch.tensor(
        [
            [9.0, 1, 2, 3, 4, 5],  # label 0 ranked 1st: top-1 and top-5 hit
            [1.0, 2, 8, 3, 9, 0],  # label 2 ranked 2nd: top-5 hit only
            [6.0, 5, 4, 3, 1, 2],  # label 5 ranked 5th: top-5 hit only
            [6.0, 0, 4, 3, 1, 2],  # label 1 ranked 6th (last): miss
        ]
    )
    labels = torch.tensor([0, 2, 5, 1])
    assert topk_accuracy(logits, labels) == {"top1": 0.25, "top5": 0.75}


def test_topk_accuracy_clamps_k_to_the_number_of_classes():
    logits = torch.tensor([[0.0, 1.0, 2.0], [2.0, 1.0, 0.0]])
    assert topk_accuracy(logits, torch.tensor([0, 0]), ks=(1, 5)) == {"top1": 0.5, "top5": 1.0}


# ------------------------------------------------------------------ multi-label (AudioSet)


def test_multihot_by_hand():
    assert multihot([(0, 2), (), (1,)], 3).tolist() == [[1, 0, 1], [0, 0, 0], [0, 1, 0]]
    with pytest.raises(ValueError, match=r"\[3\]"):
        multihot([(3,)], 3)


def test_multilabel_metrics_match_sklearn_and_skip_undefined_classes():
    sk = pytest.importorskip("sklearn.metrics")
    torch.manual_seed(0)
    n, c = 60, 5
    targets = (torch.rand(n, c) < 0.3).long()
    targets[:, 3] = 0  # no positives: AP and AUC undefined
    targets[:, 4] = 1  # no negatives: undefined too
    targets[:3, 0] = 1  # make sure the defined classes have both labels
    targets[3:6, 0] = 0
    scores = torch.randn(n, c) + 1.5 * targets
    scores[::7, 1] = scores[0, 1]  # ties in the scores
    m = multilabel_metrics(scores, targets)
    y, s = targets.numpy(), scores.numpy()
    ap = [sk.average_precision_score(y[:, k], s[:, k]) for k in range(3)]
    auc = [sk.roc_auc_score(y[:, k], s[:, k]) for k in range(3)]
    assert m["num_classes_scored"] == 3
    assert m["mAP"] == pytest.approx(sum(ap) / 3, abs=1e-6)
    assert m["AUC"] == pytest.approx(sum(auc) / 3, abs=1e-6)
    norm = pytest.importorskip("scipy.stats").norm
    d = [math.sqrt(2) * norm.ppf(a) for a in auc]
    assert m["d_prime"] == pytest.approx(sum(d) / 3, abs=1e-5)


def test_multilabel_metrics_keep_the_order_of_saturating_logits():
    sk = pytest.importorskip("sklearn.metrics")
    # sigmoid(x) is exactly 1.0 in float32 for all these logits; ranks must not tie
    scores = torch.tensor([[20.0], [30.0], [25.0], [18.0], [40.0]])
    targets = torch.tensor([[0], [1], [0], [1], [1]])
    m = multilabel_metrics(scores, targets)
    assert m["AUC"] == pytest.approx(sk.roc_auc_score(targets[:, 0], scores[:, 0]))  # 4/6
    assert m["mAP"] == pytest.approx(sk.average_precision_score(targets[:, 0], scores[:, 0]))


def test_d_prime_of_auc_076_by_hand():
    # 5 positives at ranks 10, 9, 8, 5, 2 of 10 beat 5 + 5 + 5 + 3 + 1 = 19 of the 25 negatives: AUC 0.76
    scores = torch.arange(10.0)[:, None]
    targets = torch.zeros(10, 1, dtype=torch.long)
    targets[[9, 8, 7, 4, 1]] = 1
    m = multilabel_metrics(scores, targets)
    assert m["AUC"] == pytest.approx(0.76)
    assert m["d_prime"] == pytest.approx(math.sqrt(2) * 0.7063, abs=1e-3)  # ~0.9989


def test_d_prime_is_mean_of_per_class_d_prime_not_d_prime_of_mean_auc():
    # scores 1..4; class 0 positives at ranks 2, 4 beat 1 + 2 of 4 negatives pairs (AUC 0.75),
    # class 1 positives at ranks 1, 4 beat 0 + 2 (AUC 0.5)
    scores = torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0], [4.0, 4.0]])
    targets = torch.tensor([[0, 1], [1, 0], [0, 0], [1, 1]])
    m = multilabel_metrics(scores, targets)
    assert m["AUC"] == pytest.approx(0.625)
    # (sqrt(2) * 0.6745 + 0) / 2 = 0.4769, whereas sqrt(2) * Phi^-1(0.625) = sqrt(2) * 0.3186 = 0.4506
    assert m["d_prime"] == pytest.approx(math.sqrt(2) * 0.67449 / 2, abs=1e-4)


def test_multilabel_metrics_with_no_scorable_class_report_zero_classes():
    m = multilabel_metrics(torch.rand(4, 2), torch.zeros(4, 2))
    assert m["num_classes_scored"] == 0
    assert math.isnan(m["mAP"]) and math.isnan(m["AUC"]) and math.isnan(m["d_prime"])


def test_metrics_json_is_flat_sorted_and_turns_non_finite_values_into_null(tmp_path):
    import json

    from vatt.metrics import save_metrics_json

    path = save_metrics_json({"test/d_prime": float("inf"), "num_test": 3, "test/AUC": 0.5}, tmp_path / "m.json")
    assert path.read_text() == '{\n "num_test": 3,\n "test/AUC": 0.5,\n "test/d_prime": null\n}\n'
    assert json.loads(path.read_text())["test/d_prime"] is None
