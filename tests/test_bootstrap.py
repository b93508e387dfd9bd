"""evaluation/bootstrap.py: percentile intervals over inputs, and the paired interval of a ratio of means."""
import pytest
import torch

from salient_outpaint.evaluation.bootstrap import intervals, markdown_intervals, mean_interval, ratio_interval


def test_a_constant_sample_has_an_interval_of_zero_width():
    mean, low, high = mean_interval([0.3] * 40)
    assert mean == pytest.approx(0.3) and low == pytest.approx(0.3) and high == pytest.approx(0.3)
    ratio, low, high = ratio_interval([0.6] * 40, [0.3] * 40)
    assert (ratio, low, high) == pytest.approx((2.0, 2.0, 2.0))


def test_draws_from_a_known_distribution_give_about_mean_plus_minus_1_96_standard_errors():
    values = torch.randn(400, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2.0 + 5.0
    mean, low, high = mean_interval(values.tolist())
    half_width = 1.96 * float(values.std()) / len(values) ** 0.5  # 0.196 for sd 2, n 400
    assert mean == pytest.approx(float(values.mean()))
    assert low == pytest.approx(mean - half_width, abs=0.15 * half_width)
    assert high == pytest.approx(mean + half_width, abs=0.15 * half_width)


def test_the_interval_is_the_same_for_the_same_seed_and_differs_for_another():
    values = torch.rand(30, generator=torch.Generator().manual_seed(2)).tolist()
    assert mean_interval(values) == mean_interval(values)
    assert mean_interval(values) != mean_interval(values, seed=1)


def test_a_paired_ratio_of_equal_methods_holds_one_and_a_shifted_one_does_not():
    base = torch.rand(50, generator=torch.Generator().manual_seed(3), dtype=torch.float64) + 0.5
    noise = torch.randn(50, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 0.01
    _, low, high = ratio_interval((base + noise).tolist(), base.tolist())
    assert low < 1 < high
    ratio, low, high = ratio_interval((1.5 * base).tolist(), base.tolist())
    assert ratio == pytest.approx(1.5) and 1.4 < low <= high < 1.6


def test_paired_values_of_different_lengths_are_refused():
    with pytest.raises(ValueError, match="one value of each method per input"):
        ratio_interval([1.0, 2.0], [1.0])


def test_the_report_resamples_inputs_not_images():
    """Two samples per input: the interval is over the 3 per-input means, and ratios are to the first method."""
    records = [{"method": method, "id": str(index), "expansion_ratio": scale * (index + 1) + sample * 0.1}
               for method, scale in (("a", 1.0), ("b", 2.0)) for index in range(3) for sample in range(2)]
    result = intervals(records)
    assert result["mean"]["a"]["expansion_ratio"][0] == pytest.approx((1.05 + 2.05 + 3.05) / 3)
    assert result["reference"] == "a" and "a" not in result["ratio"]
    assert result["ratio"]["b"]["expansion_ratio"][0] == pytest.approx((2.05 + 4.05 + 6.05) / 6.15)
    text = markdown_intervals(result)
    assert "expansion_ratio mean [95% CI]" in text and "Paired ratio of means to a" in text
