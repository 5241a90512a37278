import numpy as np
import pytest

from naskd.data.metrics import accuracy_f1, correlation, matthews, span_f1


def test_span_f1_counts_spans_like_conlleval():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "B-MISC"]]
    # gold spans: PER(0-1), LOC(3), ORG; predicted: PER(0-1), ORG(3), ORG, MISC -> 2 correct
    m = span_f1(gold, pred)
    assert m["precision"] == pytest.approx(2 / 4) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))


def test_classification_metrics_by_hand():
    y, p = [1, 0, 1, 1], [1, 0, 0, 1]
    m = accuracy_f1(y, p)
    assert m["accuracy"] == 0.75 and m["f1"] == pytest.approx(0.8)
    tp, tn, fp, fn = 2, 1, 0, 1
    mcc = (tp * tn - fp * fn) / np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert matthews(y, p)["mcc"] == pytest.approx(mcc)


def test_correlation():
    x = np.arange(10.0)
    m = correlation(x, x ** 3)
    assert m["spearman"] == pytest.approx(1.0) and 0.9 < m["pearson"] < 1.0
    assert correlation(x, np.ones(10)) == {"pearson": 0.0, "spearman": 0.0}
