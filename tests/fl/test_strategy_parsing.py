"""Strategy strings are parsed strictly: one spelling per strategy, exact trim counts."""

from __future__ import annotations

import re
from fractions import Fraction

import pytest

from node.errors import InvalidInput
from registry.fl import Strategy, parse_strategy


@pytest.mark.parametrize(
    ("text", "name", "ratio"),
    [
        ("fedavg", "fedavg", Fraction(0)),
        ("median", "median", Fraction(0)),
        ("trimmed-mean:0.1", "trimmed-mean", Fraction(1, 10)),
        ("trimmed-mean:0.25", "trimmed-mean", Fraction(1, 4)),
        ("trimmed-mean:0.499999", "trimmed-mean", Fraction(499999, 1000000)),
    ],
)
def test_canonical_strategy_strings_parse_and_print_back(
    text: str, name: str, ratio: Fraction
) -> None:
    strategy = parse_strategy(text)
    assert (strategy.name, strategy.trim_ratio, str(strategy)) == (name, ratio, text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "FedAvg",
        " fedavg",
        "fedavg ",
        "mean",
        "median:0.1",
        "trimmed-mean",
        "trimmed-mean:",
        "trimmed-mean:0",
        "trimmed-mean:0.0",
        "trimmed-mean:0.10",
        "trimmed-mean:.1",
        "trimmed-mean:0.1e0",
        "trimmed-mean:+0.1",
        "trimmed-mean:0.1234567",
        "trimmed-mean:1",
        "trimmed_mean:0.1",
        "trimmed-mean:0.1\n",
    ],
)
def test_other_spellings_are_unknown_strategies(text: str) -> None:
    with pytest.raises(InvalidInput, match=r"^unknown strategy "):
        parse_strategy(text)


@pytest.mark.parametrize("text", ["trimmed-mean:0.5", "trimmed-mean:0.9"])
def test_a_trim_ratio_of_one_half_or_more_is_refused(text: str) -> None:
    with pytest.raises(InvalidInput, match=r"must be below 0\.5"):
        parse_strategy(text)


def test_a_non_string_is_an_unknown_strategy() -> None:
    with pytest.raises(InvalidInput, match=r"^unknown strategy None"):
        parse_strategy(None)  # type: ignore[arg-type]


def test_trim_counts_are_exact_where_binary_floats_are_not() -> None:
    # 0.29 * 100 == 28.999999999999996 in binary floating point; the rule is floor(29).
    assert parse_strategy("trimmed-mean:0.29").trimmed_per_side(100) == 29
    assert parse_strategy("trimmed-mean:0.1").trimmed_per_side(9) == 0
    assert parse_strategy("trimmed-mean:0.1").trimmed_per_side(10) == 1


def test_parsed_strategies_are_values() -> None:
    assert parse_strategy("median") == parse_strategy("median") == Strategy("median")
    assert parse_strategy("trimmed-mean:0.25") == Strategy("trimmed-mean", Fraction(1, 4))


@pytest.mark.parametrize(
    ("name", "ratio", "message"),
    [
        ("mean", Fraction(0), "unknown strategy 'mean'"),
        ("trimmed-mean", Fraction(0), "trim ratio 0 must be in (0, 0.5)"),
        ("trimmed-mean", Fraction(1, 2), "trim ratio 1/2 must be in (0, 0.5)"),
        ("trimmed-mean", Fraction(1, 3), "trim ratio 1/3 has more than 6 decimals"),
        ("median", Fraction(1, 10), "median takes no trim ratio"),
    ],
)
def test_strategies_built_directly_are_checked(name: str, ratio: Fraction, message: str) -> None:
    with pytest.raises(InvalidInput, match=f"^{re.escape(message)}$"):
        Strategy(name, ratio)
