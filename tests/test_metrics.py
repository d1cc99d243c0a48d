"""The collapse measure the champion rule reads: a tiny probe must not call one missed document a collapse."""

from __future__ import annotations

import pytest

from llambert.metrics import min_share_ratio


def test_one_missed_document_on_a_ten_document_probe_is_not_a_collapse():
    truth = [1] * 5 + [0] * 5
    almost = [1] + [0] * 9  # predicts positive for 1 of the 5 positives (the CI case: raw ratio 0.20)
    assert min_share_ratio(truth, almost, [0, 1]) == pytest.approx(2 / 6)
    assert min_share_ratio(truth, almost, [0, 1]) > 0.25


def test_a_student_that_never_predicts_a_class_is_collapsed_and_large_sets_keep_the_plain_ratio():
    truth = [1] * 5 + [0] * 5
    assert min_share_ratio(truth, [0] * 10, [0, 1]) == pytest.approx(1 / 6)  # below the 0.25 bound
    big_truth = [1] * 500 + [0] * 500
    big_pred = [1] * 100 + [0] * 900  # positive at 0.2x its true share
    assert min_share_ratio(big_truth, big_pred, [0, 1]) == pytest.approx(101 / 501)  # ~0.20: collapsed
    # a class the truth does not hold is not judged; no truth at all is an error
    assert min_share_ratio([0, 0], [0, 0], [0, 1]) == 1.0
    with pytest.raises(ValueError, match="at least one true label"):
        min_share_ratio([], [], [0, 1])
