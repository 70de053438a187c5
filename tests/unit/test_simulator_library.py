"""The utility library: valid schemas, and exact, safe computations behind compare, date_diff and calculator."""

from __future__ import annotations

import pytest
from jsonschema import Draft202012Validator

from mtr.toolschema import argument_errors, instance_errors, validate_tool
from simulator.compute import ComputeError, PartialDate, calculate, compare_values, date_difference, parse_date
from simulator.library import LIBRARY
from simulator.taskspecific import RELATIONS, find_relation, relation_spec, standard_spec

_SPECS = [*LIBRARY.values(), *(relation_spec(r) for r in RELATIONS.values())]


@pytest.mark.parametrize("spec", _SPECS, ids=[spec.name for spec in _SPECS])
def test_every_library_and_relation_tool_is_valid(spec):
    validate_tool(spec.tool)
    Draft202012Validator.check_schema(spec.output_schema)
    # Every lookup may miss; a miss is an error observation the policy reads, so the schema must allow it.
    misses_allowed = instance_errors(spec.output_schema, {"error": "nothing found"}) == []
    assert misses_allowed == (spec.name != "search")
    assert standard_spec(spec.name) == spec


def test_relation_vocabulary_understands_keys_tool_names_and_phrases():
    assert find_relation("birth_year") is find_relation("get_birth_year") is find_relation("Birth year")
    assert find_relation("directed by").key == "director"
    assert find_relation("works for").key == "employer"
    assert find_relation("favourite colour") is None


def test_compare_criterion_is_an_enum():
    compare = LIBRARY["compare"].tool
    assert argument_errors(compare, {"a": "1", "b": "2", "criterion": "earlier"}) == []
    assert argument_errors(compare, {"a": "1", "b": "2", "criterion": "bigger"}) != []


# ----------------------------------------------------------------------------------------------- compare


@pytest.mark.parametrize(
    ("a", "b", "criterion", "result", "kind"),
    [
        ("1901", "1899", "earlier", "b", "date"),
        ("1901", "1899", "later", "a", "date"),
        ("3 May 1901", "1901-05-04", "earlier", "a", "date"),
        ("May 3, 1901", "April 1901", "later", "a", "date"),
        ("1901", "3 May 1901", "earlier", "equal", "date"),  # only the year is known on both sides
        ("900", "1200", "earlier", "a", "date"),
        ("1,200", "950", "larger", "a", "number"),
        ("3.5 km", "12 km", "smaller", "a", "number"),
        ("7", "7.0", "larger", "equal", "number"),
        ("The Silent Harbor", "silent harbor", "same", "equal", "text"),
        ("painter", "poet", "same", "different", "text"),
        ("1901", "1901.0", "same", "equal", "number"),
        ("3 May 1901", "1901-05-03", "same", "equal", "date"),
    ],
)
def test_compare(a, b, criterion, result, kind):
    outcome = compare_values(a, b, criterion)
    assert (outcome.result, outcome.compared_as) == (result, kind)


@pytest.mark.parametrize(
    ("a", "b", "criterion", "message"),
    [
        ("Dorvik", "1901", "earlier", "cannot read 'Dorvik' as a date"),
        ("12", "twelve", "larger", "cannot read 'twelve' as a single number"),
        ("1 and 2", "3", "smaller", "as a single number"),
        ("31 February 1901", "1902", "earlier", "not a real date"),
    ],
)
def test_compare_rejects_values_it_cannot_read(a, b, criterion, message):
    with pytest.raises(ComputeError, match=message):
        compare_values(a, b, criterion)


# --------------------------------------------------------------------------------------------- date_diff


@pytest.mark.parametrize(
    ("start", "end", "years", "days"),
    [
        ("1901", "1950", 49, None),
        ("1950", "1901", -49, None),
        ("1901-05-03", "1950-05-02", 48, 17896),
        ("1901-05-03", "1950-05-03", 49, 17897),
        ("3 May 1950", "1901-05-04", -48, -17896),
        ("March 2000", "2001", 1, None),
        ("2000-02-29", "2001-02-28", 0, 365),
    ],
)
def test_date_diff(start, end, years, days):
    difference = date_difference(start, end)
    assert (difference.years, difference.days) == (years, days)


def test_date_forms():
    assert parse_date("1901") == PartialDate(1901)
    assert parse_date("in 1901") == PartialDate(1901)
    assert parse_date("3rd May, 1901") == PartialDate(1901, 5, 3)
    assert parse_date("Sep 1901") == PartialDate(1901, 9)
    assert parse_date("a long time ago") is None
    with pytest.raises(ComputeError, match="not a real date"):
        parse_date("1901-13-01")
    with pytest.raises(ComputeError, match="cannot read 'soon'"):
        date_difference("soon", "1901")


# -------------------------------------------------------------------------------------------- calculator


@pytest.mark.parametrize(
    ("expression", "value"),
    [
        ("1950 - 1901", 49),
        ("(1950 - 1901) / 2", 24.5),
        ("6 / 2", 3),
        ("2 ** 10", 1024),
        ("-3 + +4", 1),
        ("7 // 2 + 7 % 2", 4),
        ("abs(1901 - 1950)", 49),
        ("max(3, 9, 4) - min(3, 9)", 6),
        ("round(2.567, 2)", 2.57),
        ("1.5e3", 1500),
    ],
)
def test_calculator_evaluates_arithmetic(expression, value):
    assert calculate(expression) == value


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("__import__('os').system('true')", "Call is not allowed|Attribute is not allowed"),
        ("__import__", "Name is not allowed"),
        ("(1).__class__", "Attribute is not allowed"),
        ("[1, 2]", "List is not allowed"),
        ("'a' * 3", "Constant is not allowed"),
        ("True + 1", "Constant is not allowed"),
        ("lambda: 1", "Lambda is not allowed"),
        ("x = 1", "cannot parse"),
        ("9 ** 9 ** 9", "too large"),
        ("10 ** 101", "too large"),
        ("0.5 ** -400", "too large"),
        ("(10 ** 60) * (10 ** 60)", "too large"),
        ("1 / 0", "division by zero"),
        ("(-8) ** 0.5", "not a real number"),
        ("max(x=1)", "plain numbers only"),
        ("+".join(["1"] * 200), "too long"),
        ("(" * 300 + "1" + ")" * 300, "cannot parse|too long"),
    ],
)
def test_calculator_refuses_anything_outside_the_whitelist(expression, message):
    with pytest.raises(ComputeError, match=message):
        calculate(expression)


def test_calculator_allows_large_but_sane_powers():
    assert calculate("10 ** 100") == 10**100
    assert calculate("1 ** 100000") == 1
