"""Final-answer extraction on the strings models actually write: markers, money, commas, LaTeX,
fractions, negatives, rambling continuations."""

from __future__ import annotations

from fractions import Fraction

import pytest

from w2s_jax.tasks.answers import (
    answer_span,
    extract_expression,
    extract_number,
    gold_number,
    last_boxed,
    math_equal,
    normalize_math,
    normalize_text,
    parse_number,
)


@pytest.mark.parametrize("text, expected", [
    ("Natalia sold 48 + 24 = 72 clips.\n#### 72", 72),
    ("#### 1,000", 1000),
    ("#### $1,234,567.", 1234567),
    ("#### $72.00.", 72),
    ("#### 72 apples", 72),
    ("#### -5", -5),
    ("#### \u22125", -5),  # unicode minus
    ("#### 0.75", Fraction(3, 4)),
    ("#### 3/4", Fraction(3, 4)),
    ("#### 72\n\nQuestion: Tom has 3 ... #### 15", 72),  # first ####: later ones are a new question
    ("The total is $18.", 18),  # last number, trailing period and dollar sign
    ("So she pays 3 * 4 = 12 dollars, then 12 - 2 = 10.", 10),
    ("10-3=7", 7),  # the "-" of a subtraction is not a sign
    ("The answer is -5 degrees.", -5),
    ("The answer is 18 dollars per day, which is 2 times more.", 18),  # "answer is" beats last number
    ("Final Answer: The final answer is $72$. I hope it is correct.", 72),
    ("First \\boxed{3}, finally \\boxed{\\frac{3}{4}}", Fraction(3, 4)),  # last boxed
    ("\\boxed{\\dfrac{1}{2}}", Fraction(1, 2)),
    ("\\boxed{1{,}000}", 1000),
    ("\\boxed{x = 5}", 5),
    ("He paid $-5 back", -5),
    ("we get 50%.", 50),
    ("It is .5 of it", Fraction(1, 2)),
    ("####\n42", 42),  # an empty #### line: the fallback still finds the number
    ("version 3.5.1 costs 2", 2),
    ("no numbers here", None),
    ("", None),
])
def test_extract_number(text, expected):
    assert extract_number(text) == (None if expected is None else Fraction(expected))


@pytest.mark.parametrize("text, expected", [
    ("72", 72), ("72.0", 72), ("72.", 72), ("$1,000", 1000), ("1{,}000", 1000), ("-3/4", Fraction(-3, 4)),
    ("\\frac{1}{2}", Fraction(1, 2)), ("-\\frac{1}{2}", Fraction(-1, 2)), ("\\tfrac{6}{4}", Fraction(3, 2)),
    ("- 5", -5), (".75", Fraction(3, 4)), ("{5}", 5), ("50\\%", 50),
    ("3 4", None), ("1/0", None), ("abc", None), ("5 apples", None), ("", None),
])
def test_parse_number(text, expected):
    assert parse_number(text) == (None if expected is None else Fraction(expected))


def test_numbers_compare_exactly():
    assert extract_number("#### 3/4") == extract_number("#### 0.75") == parse_number("\\frac{3}{4}")
    assert extract_number("#### 72.0") == extract_number("#### 72")
    assert extract_number("#### 0.333") != parse_number("1/3")  # no tolerance


def test_gold_number_is_strict():
    assert gold_number("She has 5 apples.\n#### 5") == 5
    assert gold_number("\\boxed{12}") == 12
    assert gold_number(" 42 ") == 42
    assert gold_number("She has 5 apples and 3 pears.") is None  # no guessing from the last number
    assert gold_number("#### five") is None


def test_last_boxed_nested_and_unclosed():
    assert last_boxed("a \\boxed{\\frac{1}{\\sqrt{2}}} b") == "\\frac{1}{\\sqrt{2}}"
    assert last_boxed("\\boxed 5$ more") == "5"
    assert last_boxed("\\fbox{7}") == "7"
    assert last_boxed("\\boxed{3") is None
    assert last_boxed("nothing") is None


def test_answer_span():
    assert answer_span("work\n#### 12 cats\nmore") == "12 cats"
    assert answer_span("so the answer is: blue.\nok") == "blue."
    assert answer_span("no marker 12") is None


@pytest.mark.parametrize("a, b", [
    ("\\frac12", "0.5"), ("\\dfrac{1}{2}", "1/2"), ("x = 5", "5"), ("5\\text{ cm}", "5"),
    ("\\left(1,2\\right)", "(1, 2)"), ("\\sqrt3", "\\sqrt{3}"), ("10^\\circ", "10"), ("\\text{(A)}", "(A)"),
    ("$\\frac{\\sqrt{3}}{2}$", "\\frac{\\sqrt{3}}{2}"), ("0.50", "\\frac{1}{2}"), ("3.", "3"),
])
def test_math_equal(a, b):
    assert math_equal(a, b), (normalize_math(a), normalize_math(b))


@pytest.mark.parametrize("a, b", [("2", "3"), ("\\frac{1}{3}", "0.33"), ("(1,2)", "(2,1)"), (None, "1"),
                                  ("\\sqrt{2}", "\\sqrt{3}")])
def test_math_unequal(a, b):
    assert not math_equal(a, b)


def test_extract_expression():
    assert extract_expression("so \\boxed{\\frac{\\pi}{2}}.") == "\\frac{\\pi}{2}"
    assert extract_expression("it is 4 or maybe 7") == "7"
    assert extract_expression("no answer") is None


def test_normalize_text():
    assert normalize_text("  The Cat, sat!  ") == "cat sat"
    assert normalize_text("An apple.") == "apple"
