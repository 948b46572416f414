import pytest

from finetune_pipeline.lib.data.json_output import parse_json_object
from finetune_pipeline.lib.evaluation.metrics import Answers, expected_fields, known_metric, row_scores, scores
from finetune_pipeline.lib.reporting.markdown import metrics_table as markdown_table

EXPECTED = '{"name": "Ada", "age": 36, "city": "London"}'
FIELDS = ["age", "city", "name"]


def score_example(prediction, expected, fields):
    """One row's per-row scores from every registered metric."""
    return row_scores(Answers([prediction], [expected], fields))[0]


def test_parse_accepts_objects_with_surrounding_whitespace():
    assert parse_json_object('  {"a": 1}\n') == {"a": 1}


@pytest.mark.parametrize(
    "text",
    [
        '[{"a": 1}]',  # list, not an object
        '"a string"',
        "42",
        "Sure! Here is the JSON you asked for.",
        '{"a": 1, "b": ',  # truncated by max_new_tokens
        '```json\n{"a": 1}\n```',  # fences are not stripped
        "",
    ],
)
def test_parse_rejects_non_objects(text):
    assert parse_json_object(text) is None


def test_exact_match_ignores_key_order_and_whitespace():
    pred = '{"city":"London","age":36,\n "name":"Ada"}'
    score = score_example(pred, EXPECTED, FIELDS)
    assert score["valid_json"] is True
    assert score["exact_match"] is True
    assert score["fields"] == {"age": True, "city": True, "name": True}


def test_exact_match_falls_back_to_stripped_strings():
    assert score_example("  yes \n", "yes", [])["exact_match"] is True
    assert score_example("no", "yes", [])["exact_match"] is False


def test_per_field_partial_credit():
    pred = '{"name": "Ada", "age": "36"}'  # wrong type for age, city missing
    score = score_example(pred, EXPECTED, FIELDS)
    assert score["valid_json"] is True
    assert score["exact_match"] is False
    assert score["fields"] == {"age": False, "city": False, "name": True}


def test_extra_key_breaks_exact_match_but_not_fields():
    pred = '{"name": "Ada", "age": 36, "city": "London", "note": "x"}'
    score = score_example(pred, EXPECTED, FIELDS)
    assert score["exact_match"] is False
    assert all(score["fields"].values())


def test_invalid_prediction_gets_no_field_credit():
    # Even a field the expected output lacks is not credited to unparseable output.
    score = score_example('{"name": "Ada"', EXPECTED, FIELDS + ["zip"])
    assert score["valid_json"] is False
    assert score["exact_match"] is False
    assert not any(score["fields"].values())


def test_expected_fields_is_sorted_union_of_object_keys():
    outputs = ['{"b": 1, "a": 2}', '{"c": 3}', "not json", '["x"]']
    assert expected_fields(outputs) == ["a", "b", "c"]


def test_aggregate_known_fractions():
    preds = [
        EXPECTED,  # all correct
        '{"name": "Ada", "age": 36, "city": "Paris"}',  # city wrong
        '{"name": "Bob"}',  # only... nothing right
        "I think the answer is Ada.",  # invalid
    ]
    agg = scores(Answers(preds, [EXPECTED] * len(preds), FIELDS))
    assert agg == {
        "n": 4,
        "exact_match": 0.25,
        "valid_json": 0.75,
        "accuracy/age": 0.5,
        "accuracy/city": 0.25,
        "accuracy/name": 0.5,
    }


def test_aggregate_empty_gives_zeros():
    agg = scores(Answers([], [], ["name"]))
    assert agg == {"n": 0, "exact_match": 0.0, "valid_json": 0.0, "accuracy/name": 0.0}


def test_markdown_table_default_columns_and_formatting():
    rows = {
        "base": {"n": 4, "exact_match": 0.25, "accuracy/name": 2 / 3},
        "lora-v1": {"n": 4, "exact_match": 1.0, "accuracy/name": 1.0},
    }
    lines = markdown_table(rows).splitlines()
    assert lines[0] == "| version | exact_match | accuracy/name | n |"
    assert set(lines[1]) <= {"|", "-", ":"} and lines[1].count("|") == 5
    assert lines[2] == "| base | 0.250 | 0.667 | 4 |"
    assert lines[3] == "| lora-v1 | 1.000 | 1.000 | 4 |"
    assert len(lines) == 4


def test_markdown_table_explicit_metrics():
    rows = {"base": {"n": 4, "exact_match": 0.5, "valid_json": 0.75}}
    table = markdown_table(rows, metrics=["valid_json"])
    assert table.splitlines()[0] == "| version | valid_json |"
    assert table.splitlines()[2] == "| base | 0.750 |"
    assert "0.500" not in table


@pytest.mark.parametrize("name, known", [
    ("exact_match", True), ("valid_json", True), ("accuracy/category", True), ("classification/macro_f1", True),
    ("constrained/valid_label", True),
    ("accuracy/", False), ("classification/f1", False), ("constrained/accuracy/x", False), ("exact", False),
    ("n", False),
])
def test_known_metric_names_what_the_registered_metrics_report(name, known):
    assert known_metric(name) is known


def test_every_reported_name_is_known():
    from finetune_pipeline.lib.evaluation.metrics import Classification

    answers = Answers(['{"c": "a"}', "x"], ['{"c": "a"}', '{"c": "b"}'], ["c"],
                      Classification("c", ["a", "b"], constrained=['{"c": "a"}', '{"c": "b"}']))
    names = [n for n in scores(answers) if n != "n"]
    assert len(names) == 9 and all(known_metric(n) for n in names)


def test_metrics_table_prints_the_same_columns_for_a_fresh_report_and_one_read_back_with_sorted_keys():
    from finetune_pipeline.lib.reporting.markdown import metrics_table

    fresh = {"exact_match": 0.4, "valid_json": 1.0, "accuracy/category": 0.86, "accuracy/priority": 0.52, "n": 71}
    read_back = dict(sorted(fresh.items()))  # lineage.json is written with sorted keys
    assert list(read_back) != list(fresh)
    table = metrics_table({"v": fresh})
    assert table == metrics_table({"v": read_back})
    assert table.splitlines()[0] == "| version | exact_match | valid_json | accuracy/category | accuracy/priority | n |"
