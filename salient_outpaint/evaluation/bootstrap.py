"""How sure a mean is: percentile bootstrap intervals over the inputs.

The unit that varies is the input (its object, its background), not the image: the samples of one
input share them. So each input contributes one value (the mean over its samples), and the interval
resamples inputs with replacement: 10,000 resamples, a fixed seed, the 2.5th and 97.5th percentiles of
the resampled means. Comparing two methods on the same inputs, the pairs are resampled together and
the interval is that of the ratio of their means: it holds 1 when the data cannot tell them apart.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

RESAMPLES = 10_000
LEVEL = 0.95
SEED = 0


def resampled_indices(count: int, resamples: int, seed: int) -> torch.Tensor:
    """(resamples, count) input indices drawn with replacement, the same for every call with this seed."""
    if count < 1:
        raise ValueError("a bootstrap needs at least one input")
    return torch.randint(count, (resamples, count), generator=torch.Generator().manual_seed(seed))


def percentile_interval(estimates: torch.Tensor, level: float) -> tuple[float, float]:
    tail = (1 - level) / 2
    low, high = torch.quantile(estimates, torch.tensor([tail, 1 - tail], dtype=estimates.dtype))
    return float(low), float(high)


def mean_interval(values: Sequence[float], resamples: int = RESAMPLES, seed: int = SEED,
                  level: float = LEVEL) -> tuple[float, float, float]:
    """One value per input -> (mean, low, high): the mean and its percentile bootstrap interval."""
    values = torch.as_tensor(values, dtype=torch.float64)  # (N,)
    means = values[resampled_indices(len(values), resamples, seed)].mean(dim=1)  # (resamples,)
    return (float(values.mean()), *percentile_interval(means, level))


def ratio_interval(numerator: Sequence[float], denominator: Sequence[float], resamples: int = RESAMPLES,
                   seed: int = SEED, level: float = LEVEL) -> tuple[float, float, float]:
    """Two methods' values on the same inputs, in the same order -> (mean(numerator) / mean(denominator),
    low, high), the pairs resampled together. Resamples whose denominator mean is 0 are left out."""
    numerator = torch.as_tensor(numerator, dtype=torch.float64)
    denominator = torch.as_tensor(denominator, dtype=torch.float64)
    if numerator.shape != denominator.shape:
        raise ValueError(f"a paired interval needs one value of each method per input, got {len(numerator)} "
                         f"and {len(denominator)}")
    if float(denominator.mean()) == 0.0:
        raise ValueError("the ratio of means is undefined: the denominator's mean is 0")
    indices = resampled_indices(len(numerator), resamples, seed)
    top, bottom = numerator[indices].mean(dim=1), denominator[indices].mean(dim=1)
    ratios = top[bottom != 0] / bottom[bottom != 0]
    return (float(numerator.mean() / denominator.mean()), *percentile_interval(ratios, level))


def per_input_means(records: Sequence[Mapping], metric: str) -> dict[str, dict[str, float]]:
    """{method: {input id: mean of the metric over that input's samples}} for records that carry it."""
    sums: dict[str, dict[str, list[float]]] = {}
    for record in records:
        if metric in record:
            sums.setdefault(record["method"], {}).setdefault(record["id"], []).append(float(record[metric]))
    return {method: {input_id: sum(values) / len(values) for input_id, values in inputs.items()}
            for method, inputs in sums.items()}


def intervals(records: Sequence[Mapping], metrics: Sequence[str] = ("expansion_ratio", "background_match"),
              reference: str | None = None) -> dict:
    """The report's intervals: {"mean": {method: {metric: (mean, low, high)}}, "ratio": {method:
    {metric: (ratio, low, high)}}}, the ratios against `reference` (default: the first method) on the
    inputs both have, for metrics whose reference mean is not 0."""
    result: dict = {"mean": {}, "ratio": {}}
    for metric in metrics:
        means = per_input_means(records, metric)
        if not means:
            continue
        base_name = reference if reference in means else next(iter(means))
        base = means[base_name]
        for method, values in means.items():
            result["mean"].setdefault(method, {})[metric] = mean_interval(list(values.values()))
            shared = [input_id for input_id in values if input_id in base]
            if method != base_name and shared and sum(base[input_id] for input_id in shared) != 0:
                result["ratio"].setdefault(method, {})[metric] = ratio_interval(
                    [values[input_id] for input_id in shared], [base[input_id] for input_id in shared])
        result["reference"] = base_name
    return result


def markdown_intervals(result: Mapping) -> str:
    """Each method's mean [95% interval] per metric, then each method's ratio to the reference's."""
    def cell(triple):
        return f"{triple[0]:.4g} [{triple[1]:.4g}, {triple[2]:.4g}]"

    metrics = list(dict.fromkeys(metric for row in result["mean"].values() for metric in row))
    lines = ["| method | " + " | ".join(f"{metric} mean [95% CI]" for metric in metrics) + " |",
             "| --- |" + " ---: |" * len(metrics)]
    lines += [f"| {method} | " + " | ".join(cell(row[metric]) if metric in row else "–" for metric in metrics) + " |"
              for method, row in result["mean"].items()]
    if result["ratio"]:
        lines += ["", f"Paired ratio of means to {result['reference']}, over the same inputs:", "",
                  "| method | " + " | ".join(f"{metric} ratio [95% CI]" for metric in metrics) + " |",
                  "| --- |" + " ---: |" * len(metrics)]
        lines += [f"| {method} | " + " | ".join(cell(row[metric]) if metric in row else "–" for metric in metrics)
                  + " |" for method, row in result["ratio"].items()]
    return "\n".join(lines)
