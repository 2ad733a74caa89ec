"""Final answers read out of free text: numbers, GSM8K's ``#### 72``, MATH's ``\\boxed{...}``.

Numbers are compared exactly as fractions (:class:`fractions.Fraction`), so ``3/4`` equals
``0.75``, ``\\frac{3}{4}`` and ``.75``, and ``72.0`` equals ``72``; no tolerance is applied.

Where an answer has several candidate spots the choice follows the usual conventions:

- ``#### x``: the *first* occurrence (GSM8K's strict format; a base model that keeps going after
  its answer invents further questions whose answers come later).
- ``\\boxed{x}``: the *last* occurrence (the MATH convention: a solution may box intermediate
  results, the final one is the answer).
- ``the answer is x`` and the fallback to any number: the *last* occurrence.
"""

from __future__ import annotations

import re
import string
from fractions import Fraction

# One number as written in text: thousands separators, decimals, an optional sign and /denominator.
# The look-behind keeps "x2" or "3.5.1"-style fragments and the "-" of "10-3" out of a match.
_NUMBER = re.compile(
    r"(?<![\w.])-?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+(?:\.\d+)?)?"
    r"|(?<![\w.])-?\.\d+")
_FULL_NUMBER = re.compile(r"([+-]?)(\d+(?:\.\d*)?|\.\d+)(?:/([+-]?)(\d+(?:\.\d*)?|\.\d+))?")
_FRAC = re.compile(r"([+-]?)\\[dt]?frac\{([^{}]+)\}\{([^{}]+)\}")
_ANSWER_IS = re.compile(r"answer\s*(?:is\s*:?|:)", re.IGNORECASE)
_MINUSES = str.maketrans({"\u2212": "-", "\u2013": "-", "\u2014": "-"})


def parse_number(text: str) -> Fraction | None:
    """The number a short answer string states, or None when it is not just a number.

    Accepts a sign, ``$``, thousands commas (``1,000``, LaTeX ``1{,}000``), decimals, a trailing
    period or ``%``, fractions ``a/b`` and ``\\frac{a}{b}`` (``\\dfrac``, ``\\tfrac``).

    Arguments:
      text: e.g. ``"$1,000."``, ``"-3/4"``, ``"\\frac{1}{2}"``.
    Returns:
      the exact value, or None.
    """
    s = text.translate(_MINUSES)
    for junk in ("\\$", "$", "\\%", "%", "\\!", "\\,"):
        s = s.replace(junk, "")
    s = re.sub(r"^([+-])\s+", r"\1", s.replace("{,}", ",").strip()).rstrip(".").strip()
    if s.startswith("{") and s.endswith("}"):
        s = s[1:-1]
    s = re.sub(r"(?<=\d),(?=\d{3}(?:\D|$))", "", s)
    frac = _FRAC.fullmatch(s)
    if frac:
        num, den = parse_number(frac.group(2)), parse_number(frac.group(3))
        if num is None or den is None or den == 0:
            return None
        return -num / den if frac.group(1) == "-" else num / den
    match = _FULL_NUMBER.fullmatch(s)
    if not match:
        return None
    value = Fraction(match.group(2))
    if match.group(4) is not None:
        den = Fraction(match.group(4))
        if den == 0:
            return None
        value = value / den * (-1 if match.group(3) == "-" else 1)
    return -value if match.group(1) == "-" else value


def find_numbers(text: str) -> list[Fraction]:
    """Every number written in ``text``, in order (see :func:`parse_number` for the forms)."""
    out = []
    for match in _NUMBER.finditer(text.translate(_MINUSES)):
        value = parse_number(match.group(0))
        if value is not None:
            out.append(value)
    return out


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``, nested braces
    kept balanced; ``\\boxed 5`` (no braces) gives ``5``. None when there is none or it is unclosed.
    """
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    rest = text[start + (6 if text.startswith("\\boxed", start) else 5):]
    if rest.startswith(" "):  # "\boxed 5": up to the next space or "$"
        return re.split(r"[\s$]", rest.lstrip(), maxsplit=1)[0] or None
    if not rest.startswith("{"):
        return None
    depth = 0
    for i, char in enumerate(rest):
        depth += {"{": 1, "}": -1}.get(char, 0)
        if depth == 0:
            return rest[1:i]
    return None


def _line_after(text: str, position: int) -> str:
    return text[position:].split("\n", 1)[0]


def answer_span(text: str) -> str | None:
    """The part of a response that states its final answer: after the first ``####`` (to the end
    of that line), else the last ``\\boxed{}``'s content, else after the last ``answer is`` /
    ``answer:`` (to the end of that line); None when the response marks no answer."""
    marker = text.find("####")
    if marker >= 0 and _line_after(text, marker + 4).strip():
        return _line_after(text, marker + 4).strip()
    boxed = last_boxed(text)
    if boxed is not None:
        return boxed
    said = list(_ANSWER_IS.finditer(text))
    if said and _line_after(text, said[-1].end()).strip():
        return _line_after(text, said[-1].end()).strip()
    return None


def extract_number(text: str) -> Fraction | None:
    """The final numeric answer of a free-text response (GSM8K-style scoring).

    The marked answer (:func:`answer_span`) is read first: the whole span as a number, else the
    first number in it (``#### 72 apples`` -> 72). A response without a marked answer, or whose
    marked answer holds no number, falls back to the last number anywhere in the text.

    Returns:
      the exact value, or None when the text holds no number.
    """
    span = answer_span(text)
    if span is not None:
        whole = parse_number(span)
        if whole is not None:
            return whole
        numbers = find_numbers(span)
        if numbers:
            return numbers[0]
    numbers = find_numbers(text)
    return numbers[-1] if numbers else None


def gold_number(text: str) -> Fraction | None:
    """The final number of a gold answer, strictly: after ``####``, inside the last ``\\boxed{}``,
    or the whole answer when it is a number. No last-number guess: a gold answer without a marked
    final number is a data error, not something to guess at."""
    marker = text.find("####")
    if marker >= 0:
        return parse_number(_line_after(text, marker + 4))
    boxed = last_boxed(text)
    if boxed is not None:
        return parse_number(boxed)
    return parse_number(text)


# --- MATH-style expressions ------------------------------------------------------------------


def _fix_fracs(s: str) -> str:
    """``\\frac12`` -> ``\\frac{1}{2}``, ``\\frac1{2}`` -> ``\\frac{1}{2}``."""
    head, *parts = s.split("\\frac")
    out = head
    for part in parts:
        out += "\\frac"
        if part.startswith("{") or len(part) < 2:
            out += part
        elif part[1] == "{":
            out += "{" + part[0] + "}" + part[1:]
        else:
            out += "{" + part[0] + "}{" + part[1] + "}" + part[2:]
    return out


def _unwrap(s: str, command: str) -> str:
    """``\\command{x}`` -> ``x`` (innermost braces first, so nesting is handled)."""
    pattern = re.compile(re.escape(command) + r"\{([^{}]*)\}")
    while True:
        new = pattern.sub(r"\1", s)
        if new == s:
            return s
        s = new


def normalize_math(text: str) -> str:
    """A MATH answer in a canonical spelling, so equal answers compare equal as strings.

    After Hendrycks et al.'s MATH ``is_equiv``: drops ``$``, ``\\left``/``\\right``, spacing
    commands, degrees, ``\\%``, units written as ``\\text{ ...}``, a short ``x =`` prefix and a
    trailing period; ``\\dfrac``/``\\tfrac`` become ``\\frac``; ``\\frac12`` and ``\\sqrt3`` get their
    braces; ``a/b`` of integers becomes ``\\frac{a}{b}``; all spaces are removed.
    """
    s = text.translate(_MINUSES).strip().replace("\n", "")
    s = s.replace("\\!", "").replace("\\\\", "\\").replace("tfrac", "frac").replace("dfrac", "frac")
    s = s.replace("\\left", "").replace("\\right", "")
    s = s.replace("^{\\circ}", "").replace("^\\circ", "").replace("\\$", "").replace("$", "")
    s = s.replace("\\%", "").replace("%", "").replace("\\,", "").replace("\\;", "").replace("\\ ", "")
    if "\\text{ " in s:  # units: "5\text{ cm}"
        s = s.split("\\text{ ")[0]
    for command in ("\\text", "\\textbf", "\\mathrm", "\\mbox"):
        s = _unwrap(s, command)
    s = s.strip().rstrip(".").strip()
    s = s.replace(" .", " 0.").replace("{.", "{0.")
    if s.startswith("."):
        s = "0" + s
    if s.count("=") == 1 and len(s.split("=")[0].strip()) <= 2:
        s = s.split("=")[1]
    s = re.sub(r"\\sqrt(\w)", r"\\sqrt{\1}", s)
    s = s.replace(" ", "")
    s = _fix_fracs(s)
    simple = re.fullmatch(r"(-?\d+)/(\d+)", s)
    if simple:
        s = f"\\frac{{{simple.group(1)}}}{{{simple.group(2)}}}"
    return s


def math_equal(prediction: str | None, gold: str) -> bool:
    """Whether two MATH answers agree: equal after :func:`normalize_math`, or, when both read as
    numbers (``0.5`` and ``\\frac{1}{2}``), numerically equal."""
    if prediction is None:
        return False
    a, b = normalize_math(prediction), normalize_math(gold)
    if a == b:
        return True
    x, y = parse_number(a), parse_number(b)
    return x is not None and y is not None and x == y


def extract_expression(text: str) -> str | None:
    """The final answer of a MATH-style response as a string: the marked answer
    (:func:`answer_span`), else the last number in the text; None when there is neither."""
    span = answer_span(text)
    if span is not None:
        return span
    matches = list(_NUMBER.finditer(text.translate(_MINUSES)))
    return matches[-1].group(0) if matches else None


# --- short text answers --------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_text(text: str) -> str:
    """SQuAD's answer normalisation: lower case, punctuation and the articles a/an/the removed,
    whitespace collapsed."""
    s = _ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION))
    return " ".join(s.split())
