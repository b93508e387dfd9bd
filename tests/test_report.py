"""Report: records -> JSON-able summary -> Markdown tables."""
import json

import pytest

from salient_outpaint.evaluation.report import markdown_category_table, markdown_table, summarise

RECORDS = [
    {"method": "SI2", "category": "animal", "image_id": "a", "expansion_ratio": 0.5, "clip_score": 30.0},
    {"method": "SI2", "category": "vehicle", "image_id": "b", "expansion_ratio": 0.3, "clip_score": 28.0},
    {"method": "SI2 + ControlNet", "category": "animal", "image_id": "a", "expansion_ratio": 0.1, "clip_score": 31.0},
    {"method": "SI2 + ControlNet", "category": "vehicle", "image_id": "b", "expansion_ratio": 0.1, "clip_score": 29.0},
]


def test_summary_is_json_and_holds_per_method_and_per_category_statistics():
    summary = summarise(RECORDS, set_metrics={"SI2": {"fid": 15.5}, "SI2 + ControlNet": {"fid": 14.0}})
    assert json.loads(json.dumps(summary)) == summary
    si2 = summary["methods"]["SI2"]
    assert si2["count"] == 2
    assert si2["metrics"]["expansion_ratio"] == {"mean": 0.4, "median": 0.4, "count": 2}
    assert "image_id" not in si2["metrics"]  # text fields are not metrics
    assert si2["set_metrics"] == {"fid": 15.5}
    assert si2["per_category"]["vehicle"]["clip_score"]["mean"] == 28.0


def test_markdown_table_has_a_row_per_method_and_a_column_per_metric():
    summary = summarise(RECORDS, set_metrics={"SI2": {"fid": 15.5}, "SI2 + ControlNet": {"fid": 14.0}})
    lines = markdown_table(summary).splitlines()
    assert lines[0] == "| method | n | expansion_ratio (mean) | clip_score (mean) | fid |"
    assert lines[2] == "| SI2 | 2 | 0.4 | 29 | 15.5 |"
    assert lines[3] == "| SI2 + ControlNet | 2 | 0.1 | 30 | 14 |"
    assert markdown_table(summary, metrics=["fid"]).splitlines()[2] == "| SI2 | 2 | 15.5 |"


def test_category_table_has_a_row_per_category_and_a_column_per_method():
    lines = markdown_category_table(summarise(RECORDS), "expansion_ratio").splitlines()
    assert lines[0] == "| category | SI2 expansion_ratio (mean) | SI2 + ControlNet expansion_ratio (mean) |"
    assert lines[2:] == ["| animal | 0.5 | 0.1 |", "| vehicle | 0.3 | 0.1 |"]


def test_report_errors_name_the_problem():
    with pytest.raises(ValueError, match="no record names"):
        summarise(RECORDS, set_metrics={"SD1": {"fid": 1.0}})
    with pytest.raises(KeyError, match="'category'"):
        summarise([{"method": "SI2", "clip_score": 1.0}])
    with pytest.raises(ValueError, match="statistic"):
        markdown_table(summarise(RECORDS), statistic="max")
