"""Per-image records -> a JSON-able summary and Markdown tables.

A *record* is one generated image's row of results, a plain dict such as

    {"method": "SI2 + ControlNet", "category": "animal", "image_id": "000123",
     "expansion_ratio": 0.04, "clip_score": 31.2, "lpips_diversity": 0.41}

Every int/float value other than the grouping keys is treated as a per-image metric and
summarised by its mean, median and count. Metrics that only exist for a whole set of images
(FID) are passed separately as `set_metrics`, one dict per method.
"""
from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from numbers import Real

METHOD_KEY = "method"
CATEGORY_KEY = "category"
STATISTICS = ("mean", "median")


def describe(values: Iterable[float]) -> dict[str, float]:
    """Mean, median (the middle two averaged for an even count) and count of some values."""
    values = [float(value) for value in values]
    if not values:
        raise ValueError("cannot describe an empty list of values; at least one record must carry the metric")
    return {"mean": statistics.fmean(values), "median": statistics.median(values), "count": len(values)}


def group_by(records: Iterable[Mapping], key: str) -> dict[str, list[Mapping]]:
    """Records grouped by `record[key]`, groups in order of first appearance."""
    groups: dict[str, list[Mapping]] = {}
    for record in records:
        if key not in record:
            raise KeyError(f"a record has no {key!r} field (it has {sorted(record)}); every record needs one "
                           "to be grouped")
        groups.setdefault(str(record[key]), []).append(record)
    return groups


def metric_names(records: Iterable[Mapping]) -> list[str]:
    """Numeric fields of the records other than the grouping keys, in order of first appearance."""
    names: dict[str, None] = {}
    for record in records:
        for name, value in record.items():
            if name in (METHOD_KEY, CATEGORY_KEY) or isinstance(value, bool) or not isinstance(value, Real):
                continue
            names[name] = None
    return list(names)


def describe_metrics(records: Sequence[Mapping], metrics: Sequence[str]) -> dict[str, dict[str, float]]:
    """`describe` of each metric over the records that carry it (metrics no record carries are left out)."""
    summary = {}
    for metric in metrics:
        values = [record[metric] for record in records if metric in record]
        if values:
            summary[metric] = describe(values)
    return summary


def summarise(records: Sequence[Mapping], set_metrics: Mapping[str, Mapping[str, float]] | None = None,
              per_category: bool = True) -> dict:
    """A JSON-able summary, keyed by method:

        {"methods": {"SI2": {"count": 500,
                             "metrics": {"expansion_ratio": {"mean": .., "median": .., "count": ..}, ...},
                             "set_metrics": {"fid": 14.2},
                             "per_category": {"animal": {"expansion_ratio": {...}, ...}, ...}}}}

    `per_category` needs a "category" field on every record.
    """
    set_metrics = set_metrics or {}
    records_by_method = group_by(records, METHOD_KEY)
    unknown_methods = set(set_metrics) - set(records_by_method)
    if unknown_methods:
        raise ValueError(f"set metrics were given for {sorted(unknown_methods)}, which no record names; "
                         f"the records' methods are {list(records_by_method)}")
    metrics = metric_names(records)
    methods = {}
    for method, method_records in records_by_method.items():
        method_summary = {"count": len(method_records),
                          "metrics": describe_metrics(method_records, metrics),
                          "set_metrics": {name: float(value) for name, value in set_metrics.get(method, {}).items()}}
        if per_category:
            method_summary["per_category"] = {
                category: describe_metrics(category_records, metrics)
                for category, category_records in sorted(group_by(method_records, CATEGORY_KEY).items())}
        methods[method] = method_summary
    return {"methods": methods}


def format_value(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"


def markdown_table(summary: Mapping, metrics: Sequence[str] | None = None, statistic: str = "mean") -> str:
    """One row per method, one column per metric (per-image metrics show `statistic`, set metrics their value).

    `metrics` picks and orders the columns; by default every metric in the summary appears.
    """
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {STATISTICS}, got {statistic!r}")
    methods = summary["methods"]
    if metrics is None:
        columns: dict[str, None] = {}
        for method_summary in methods.values():
            columns.update(dict.fromkeys(method_summary["metrics"]))
            columns.update(dict.fromkeys(method_summary["set_metrics"]))
        metrics = list(columns)
    lines = ["| method | n | " + " | ".join(f"{metric} ({statistic})" if not _is_set_metric(methods, metric)
                                             else metric for metric in metrics) + " |",
             "| --- | ---: |" + " ---: |" * len(metrics)]
    for method, method_summary in methods.items():
        cells = [format_value(_metric_value(method_summary, metric, statistic)) for metric in metrics]
        lines.append(f"| {method} | {method_summary['count']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_category_table(summary: Mapping, metric: str, statistic: str = "mean") -> str:
    """One row per category, one column per method, cells holding `statistic` of one per-image metric."""
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {STATISTICS}, got {statistic!r}")
    methods = summary["methods"]
    if not all("per_category" in method_summary for method_summary in methods.values()):
        raise ValueError("this summary has no per-category breakdown; build it with summarise(..., per_category=True)")
    categories = sorted({category for method_summary in methods.values()
                         for category in method_summary["per_category"]})
    lines = ["| category | " + " | ".join(f"{method} {metric} ({statistic})" for method in methods) + " |",
             "| --- |" + " ---: |" * len(methods)]
    for category in categories:
        cells = []
        for method_summary in methods.values():
            stats = method_summary["per_category"].get(category, {}).get(metric)
            cells.append(format_value(None if stats is None else stats[statistic]))
        lines.append(f"| {category} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _is_set_metric(methods: Mapping, metric: str) -> bool:
    return any(metric in method_summary["set_metrics"] for method_summary in methods.values())


def _metric_value(method_summary: Mapping, metric: str, statistic: str) -> float | None:
    if metric in method_summary["set_metrics"]:
        return method_summary["set_metrics"][metric]
    stats = method_summary["metrics"].get(metric)
    return None if stats is None else stats[statistic]
