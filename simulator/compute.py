"""Exact computations behind `compare`, `date_diff` and `calculator`: reading numbers and dates, safe arithmetic.

Values arrive as text the policy copied from observations ("1901", "3 May 1901", "1,200"), so parsing is
lenient about form and strict about meaning: anything ambiguous raises `ComputeError` with a message the
policy can act on. The calculator walks the `ast` of the expression against a whitelist; it never calls
`eval`, and it refuses results too large to be a sensible answer before computing them.
"""

from __future__ import annotations

import ast
import calendar
import datetime
import math
import operator
import re
from dataclasses import dataclass

from mtr.answers import normalize_answer


class ComputeError(ValueError):
    """The policy's input cannot be computed with; the message says why and is shown to the policy."""


# ------------------------------------------------------------------------------------------------ values

_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
_MONTHS = {name.lower(): i for i, name in enumerate(calendar.month_name) if name}
_MONTHS.update({name.lower(): i for i, name in enumerate(calendar.month_abbr) if name})
_MONTH = "(?P<month>" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")\.?"
_DATE_FORMS = (
    re.compile(r"(?P<year>\d{1,4})-(?P<month>\d{1,2})(?:-(?P<day>\d{1,2}))?"),
    re.compile(rf"(?P<day>\d{{1,2}})(?:st|nd|rd|th)?\s+{_MONTH},?\s+(?P<year>\d{{1,4}})", re.I),
    re.compile(rf"{_MONTH}\s+(?P<day>\d{{1,2}})(?:st|nd|rd|th)?,?\s+(?P<year>\d{{1,4}})", re.I),
    re.compile(rf"{_MONTH},?\s+(?P<year>\d{{1,4}})", re.I),
    re.compile(r"(?:(?:in|year)\s+)?(?P<year>\d{1,4})", re.I),
)


def parse_number(text: str) -> int | float | None:
    """The one number in `text` ("1,200 km" -> 1200), or None when it holds none or several."""
    found = _NUMBER.findall(_THOUSANDS.sub("", text))
    if len(found) != 1:
        return None
    value = float(found[0])
    return int(value) if value.is_integer() and abs(value) < 2**53 else value


@dataclass(frozen=True)
class PartialDate:
    """A date known to the year, the month or the day; comparisons use only the precision both sides have."""

    year: int
    month: int | None = None
    day: int | None = None

    def __str__(self) -> str:
        if self.month is None:
            return f"{self.year}"
        return f"{self.year:04d}-{self.month:02d}" + ("" if self.day is None else f"-{self.day:02d}")

    def key(self, precision: int) -> tuple[int, ...]:
        return (self.year, self.month or 0, self.day or 0)[:precision]

    @property
    def precision(self) -> int:
        return 1 if self.month is None else 2 if self.day is None else 3


def parse_date(text: str) -> PartialDate | None:
    """A year, year-month or full date in a common written form, or None; impossible dates raise ComputeError."""
    cleaned = text.strip().rstrip(".")
    for form in _DATE_FORMS:
        match = form.fullmatch(cleaned)
        if match:
            return _to_date(match, text)
    return None


def _to_date(match: re.Match, text: str) -> PartialDate:
    fields = match.groupdict()
    year = int(fields["year"])
    month_text = fields.get("month")
    month = None if month_text is None else int(month_text) if month_text.isdigit() else _MONTHS[month_text.lower()]
    day = None if fields.get("day") is None else int(fields["day"])
    try:
        datetime.date(year, month or 1, day or 1)
    except ValueError as error:
        raise ComputeError(f"{text!r} is not a real date ({error})") from None
    return PartialDate(year, month, day)


# ------------------------------------------------------------------------------------------------ compare


@dataclass(frozen=True)
class Comparison:
    result: str  # "a" | "b" | "equal" | "different"
    compared_as: str  # "number" | "date" | "text"
    explanation: str


def compare_values(a: str, b: str, criterion: str) -> Comparison:
    """Which of a and b is earlier/later/larger/smaller (or "equal"), or whether they are the "same"."""
    if criterion == "same":
        return _same(a, b)
    if criterion in ("earlier", "later"):
        dates = parse_date(a), parse_date(b)
        if None not in dates:
            return _order(a, b, criterion, "date", *_date_keys(*dates))
        numbers = parse_number(a), parse_number(b)
        if None not in numbers:
            return _order(a, b, criterion, "number", *numbers)
        bad = a if dates[0] is None else b
        raise ComputeError(f"cannot read {bad!r} as a date or a year; pass just the date, e.g. 1901 or 3 May 1901")
    if criterion in ("larger", "smaller"):
        numbers = parse_number(a), parse_number(b)
        if None in numbers:
            bad = a if numbers[0] is None else b
            raise ComputeError(f"cannot read {bad!r} as a single number; pass just the number, e.g. 1200 or 3.5")
        return _order(a, b, criterion, "number", *numbers)
    raise ComputeError(f"unknown criterion {criterion!r}; use earlier, later, larger, smaller or same")


def _date_keys(x: PartialDate, y: PartialDate) -> tuple[tuple[int, ...], tuple[int, ...]]:
    # "1901" vs "3 May 1901" agree at year precision; finer detail only one side has cannot decide.
    precision = min(x.precision, y.precision)
    return x.key(precision), y.key(precision)


def _order(a: str, b: str, criterion: str, kind: str, x: object, y: object) -> Comparison:
    if x == y:
        return Comparison("equal", kind, f"{a} and {b} are equal as {kind}s, so neither is {criterion}")
    smaller_first = criterion in ("earlier", "smaller")
    a_wins = (x < y) == smaller_first  # type: ignore[operator]
    winner, loser = (a, b) if a_wins else (b, a)
    return Comparison("a" if a_wins else "b", kind, f"{winner} is {criterion} than {loser}")


def _same(a: str, b: str) -> Comparison:
    kind, equal = "text", normalize_answer(a) == normalize_answer(b)
    for candidate, parse in (("number", parse_number), ("date", parse_date)):
        x, y = parse(a), parse(b)
        if x is not None and y is not None:
            kind, equal = candidate, x == y
            break
    verdict = "the same" if equal else "different"
    return Comparison("equal" if equal else "different", kind, f"{a} and {b} are {verdict} (compared as {kind})")


# ---------------------------------------------------------------------------------------------- date_diff


@dataclass(frozen=True)
class DateDifference:
    start: PartialDate
    end: PartialDate
    years: int
    days: int | None  # only when both dates are known to the day


def date_difference(start: str, end: str) -> DateDifference:
    """Whole years (and days, for full dates) from start to end; negative when end comes first."""
    dates = parse_date(start), parse_date(end)
    for text, date in zip((start, end), dates, strict=True):
        if date is None:
            raise ComputeError(f"cannot read {text!r} as a date or a year; e.g. 1901, 1901-05-03 or 3 May 1901")
    first, last = dates
    if first.precision < 3 or last.precision < 3:
        return DateDifference(first, last, last.year - first.year, None)
    a, b = datetime.date(first.year, first.month, first.day), datetime.date(last.year, last.month, last.day)
    sign, lo, hi = (1, a, b) if a <= b else (-1, b, a)
    years = hi.year - lo.year - ((hi.month, hi.day) < (lo.month, lo.day))
    return DateDifference(first, last, sign * years, (b - a).days)


# ---------------------------------------------------------------------------------------------- calculator

_MAX_MAGNITUDE = 1e100  # no multi-hop answer is larger; anything beyond is a mistake or an attack
_MAX_NODES = 100
_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS = {"abs": abs, "min": min, "max": max, "round": round}
_ALLOWED = "numbers, + - * / // % **, parentheses and abs/min/max/round"


def calculate(expression: str) -> int | float:
    """The value of an arithmetic expression; anything outside the whitelist raises ComputeError."""
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as error:
        problem = type(error).__name__
        raise ComputeError(f"cannot parse {expression!r} as arithmetic ({problem}); use {_ALLOWED}") from None
    if sum(1 for _ in ast.walk(tree)) > _MAX_NODES:
        raise ComputeError(f"the expression is too long (more than {_MAX_NODES} parts); split it into steps")
    try:
        value = _evaluate(tree.body)
    except ZeroDivisionError:
        raise ComputeError("division by zero") from None
    except (OverflowError, RecursionError):
        raise ComputeError("the result is too large") from None
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def _evaluate(node: ast.AST) -> int | float:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return _checked(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow):
            _check_power(left, right)
        return _checked(_BINARY[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS:
        if node.keywords or not node.args:
            raise ComputeError(f"{node.func.id}() takes plain numbers only, e.g. {node.func.id}(3, 4)")
        return _checked(_FUNCTIONS[node.func.id](*(_evaluate(arg) for arg in node.args)))
    raise ComputeError(f"{type(node).__name__} is not allowed in the calculator; use {_ALLOWED}")


def _check_power(base: float, exponent: float) -> None:
    """Refuse a power whose result would be huge *before* computing it (9**9**9 would take minutes)."""
    if base == 0 or abs(base) == 1:
        return
    if exponent * math.log10(abs(base)) > math.log10(_MAX_MAGNITUDE):
        raise ComputeError(f"{base} ** {exponent} is too large (the calculator stops at 1e100)")


def _checked(value: complex | float) -> int | float:
    if isinstance(value, complex):
        raise ComputeError("the result is not a real number")
    if isinstance(value, float) and not math.isfinite(value):
        raise ComputeError("the result is not a finite number")
    if abs(value) > _MAX_MAGNITUDE:
        raise ComputeError("the result is too large (the calculator stops at 1e100)")
    return value
