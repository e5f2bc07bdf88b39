"""Metrics, tables and result files of the evaluation harness."""

import json

import numpy as np
import pytest

from deeplk import evaluate


def test_corner_errors_against_direct_computation():
    rng = np.random.default_rng(0)
    true = rng.uniform(0, 192, size=(5, 4, 2))
    pred = true + rng.normal(size=(5, 4, 2))
    expected = [np.mean([np.hypot(*(pred[b, k] - true[b, k])) for k in range(4)]) for b in range(5)]
    np.testing.assert_allclose(evaluate.corner_errors(pred, true), expected)


def test_failures_are_infinite_and_miss_every_threshold():
    true = np.zeros((3, 4, 2))
    pred = np.zeros((3, 4, 2))
    pred[1] = np.nan
    pe = evaluate.corner_errors(pred, true, failed=[False, False, True])
    assert pe[0] == 0 and np.isinf(pe[1]) and np.isinf(pe[2])
    s = evaluate.summarise(pe, seconds=0.3)
    assert s["n"] == 3 and s["failures"] == 2
    assert s["success"]["0.1"] == pytest.approx(100 / 3)
    assert s["mean_pe"] == 0 and s["ms_per_pair"] == pytest.approx(100.0)


def test_success_thresholds_are_strict_and_keyed_as_promised():
    rates = evaluate.success_rates(np.array([0.05, 0.5, 1.0, 2.9, 25.0]))
    assert list(rates) == ["0.1", "0.5", "1", "3", "5", "10", "20"]
    assert rates == {"0.1": 20.0, "0.5": 20.0, "1": 40.0, "3": 80.0, "5": 80.0, "10": 80.0, "20": 80.0}


@pytest.mark.parametrize("errors, mean, median", [
    ([0.5, 4.0, 1.0, 90.0, 2.0, np.inf], 19.5, 2.0),  # odd count of predictions: the middle one
    ([1000.0, 1.0, 10.0, 2.0], 253.25, 6.0),          # even count: mean of the middle two
])
def test_mean_and_median_of_a_skewed_list_over_the_predictions(errors, mean, median):
    s = evaluate.summarise(np.array(errors))
    assert s["mean_pe"] == pytest.approx(mean) and s["median_pe"] == pytest.approx(median)
    assert s["failures"] == int(np.isinf(errors).sum())


def test_all_failed_gives_null_statistics():
    s = evaluate.summarise(np.full(4, np.inf))
    assert s["mean_pe"] is None and s["median_pe"] is None and s["failures"] == 4
    assert "| m |" in evaluate.format_table({"m": s})


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="pred_corners"):
        evaluate.corner_errors(np.zeros((2, 3, 2)), np.zeros((2, 4, 2)))
    with pytest.raises(ValueError, match="errors"):
        evaluate.success_rates(np.array([]))


def test_write_results_files(tmp_path):
    errors = {"a": np.array([0.2, 0.7, np.inf]), "b": np.array([5.0, 15.0, 30.0])}
    summaries = {k: evaluate.summarise(v, seconds=0.01) for k, v in errors.items()}
    paths = evaluate.write_results(tmp_path / "res", summaries, errors)
    saved = json.loads(paths["summary"].read_text())
    assert set(saved) == {"a", "b"}
    assert set(saved["a"]) == {"n", "failures", "mean_pe", "median_pe", "success", "ms_per_pair"}
    md = paths["markdown"].read_text().splitlines()
    assert md[0].startswith("| method | <0.1 px") and md[2].startswith("| a | 0.0 | 33.3 | 66.7")
    assert paths["csv"].read_text().splitlines()[1].startswith("a,0.0,33.3,66.7")
    assert paths["per_sample"].read_text().splitlines()[3] == "2,failed,30.0000"
    assert set(paths) == {"summary", "markdown", "csv", "per_sample"}  # numbers only
    assert not list((tmp_path / "res").glob("*.partial"))


class TestFormatComparison:
    """Our rows beside the paper's (`format_comparison`, `write_results(paper_table=...)`)."""

    @staticmethod
    def _summaries():
        # dlkfm: PE 0.05, 0.7, 2, 4 -> below 0.1: 25%, 0.5: 25%, 1: 50%, 3: 75%, 5..20: 100%
        errors = {"identity": np.array([30.0, 30.0, 30.0, 30.0]), "dlkfm": np.array([0.05, 0.7, 2.0, 4.0]),
                  "sift": np.array([np.inf, 0.3, 0.3, 0.3])}
        return {k: evaluate.summarise(v) for k, v in errors.items()}

    def test_known_summary_gives_the_paper_layout(self):
        text = evaluate.format_comparison(self._summaries(), "googlemap")
        lines = text.splitlines()
        assert lines[0] == ("| method | row | n | <0.1 px | <0.5 px | <1 px | <3 px | <5 px | <10 px | <20 px |")
        assert lines[1] == "|" + "---|" * 10
        body = lines[2:lines.index("")]
        assert body == [
            "| identity | ours | 4 | 0.00 | 0.00 | 0.00 | 0.00 | 0.00 | 0.00 | 0.00 |",
            "| dlkfm | ours | 4 | 25.00 | 25.00 | 50.00 | 75.00 | 100.00 | 100.00 | 100.00 |",
            "| DLKFM | paper | 888 | 0.00 | 2.25 | 16.80 | 61.33 | 73.39 | 83.20 | 93.80 |",
            "| sift | ours | 4 | 0.00 | 75.00 | 75.00 | 75.00 | 75.00 | 75.00 | 75.00 |",
            "| SIFT + RANSAC | paper | 888 | 0.00 | 0.00 | 0.00 | 0.00 | 0.00 | 2.74 | 3.44 |",
            # published methods we did not run follow, in the paper's order
            "| SIFT + MAGSAC | paper | 888 | 0.00 | 0.00 | 0.00 | 0.00 | 0.00 | 0.15 | 2.58 |",
            "| DHN | paper | 888 | 0.00 | 0.00 | 0.00 | 1.20 | 3.43 | 6.99 | 78.89 |",
            "| MHN | paper | 888 | 0.00 | 0.34 | 0.45 | 0.50 | 3.50 | 35.69 | 93.77 |",
            "| CLKN | paper | 888 | 0.00 | 0.00 | 0.00 | 1.57 | 1.88 | 8.67 | 22.45 |",
        ]
        assert "CVPR 2021" in text  # the source of the paper rows

    def test_every_published_table_has_a_rate_per_threshold_in_percent(self):
        from deeplk.published import METHOD_ROWS, PUBLISHED

        for dataset, table in PUBLISHED.items():
            assert set(METHOD_ROWS.values()) <= set(table["rows"]), dataset
            for name, values in table["rows"].items():
                assert len(values) == len(evaluate.THRESHOLDS), (dataset, name)
                assert all(0 <= v <= 100 for v in values) and list(values) == sorted(values), (dataset, name)

    def test_written_next_to_the_summary_and_unknown_dataset_named(self, tmp_path):
        paths = evaluate.write_results(tmp_path / "res", self._summaries(), paper_table="mscoco")
        assert paths["paper_table"].read_text() == evaluate.format_comparison(self._summaries(), "mscoco")
        assert "| DLKFM | paper | 6000 | 17.16 | 72.25 | 92.81 |" in paths["paper_table"].read_text()
        with pytest.raises(ValueError, match=r"no published table for 'coco'; known: \['googleearth', 'googlemap', 'mscoco'\]"):
            evaluate.write_results(tmp_path / "res2", self._summaries(), paper_table="coco")
        assert not (tmp_path / "res2").exists()  # nothing written before the error
