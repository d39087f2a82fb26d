"""The rule type of the rule book and the one function that checks a value against a rule.

A :class:`Rule` says what one key accepts: its type, range, allowed values and an example. :func:`check_value`
returns the value coerced to the rule's type (numeric strings from ``${oc.env:...}`` become numbers) or raises a
:class:`ConfigError` with one line: ``<key> must be <what>, got <value>; e.g. <key>=<example>``. No torch here.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from ablate.errors import ConfigError


@dataclass(frozen=True)
class Rule:
    """What one key accepts. ``kind`` is int, float, bool, str or list (of ``item``); ``low``/``high`` bound numbers
    (``*_open``: strict); ``choices`` lists allowed values; ``extra`` are values allowed outside the range."""

    kind: type
    example: Any
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[Any, ...] = ()
    extra: tuple[Any, ...] = ()
    nullable: bool = False
    item: Rule | None = None
    length: int | None = None
    why: str = ""

    def describe(self) -> str:
        if self.kind is bool:
            return "true or false"
        if self.choices:
            return "one of " + ", ".join(str(c) for c in self.choices)
        if self.kind is list:
            assert self.item is not None
            size = f"{self.length} " if self.length else ""
            return f"a list of {size}{_plural(self.item.describe())}"
        if self.kind is str:
            return "a string" + (" or null" if self.nullable else "")
        noun = "an integer" if self.kind is int else "a number"
        if self.kind is float and self.low == 0 and self.low_open and self.high is None:
            text = "a positive number"
        elif self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            text = f"{noun} in {left}{_num(self.low)}, {_num(self.high)}{right}"
        elif self.low is not None:
            text = f"{noun} {'>' if self.low_open else '>='} {_num(self.low)}"
        else:
            text = noun
        for value in self.extra:
            text += f" (or {value})"
        return text + (" or null" if self.nullable else "")


def _plural(description: str) -> str:
    return (
        description.replace("an integer", "integers").replace("a number", "numbers").replace("a positive", "positive")
    )


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def integer(example: int, low: float | None = None, **kw: Any) -> Rule:
    return Rule(int, example, low=low, **kw)


def number(example: float, low: float | None = None, high: float | None = None, **kw: Any) -> Rule:
    return Rule(float, example, low=low, high=high, **kw)


def positive(example: float, **kw: Any) -> Rule:
    return Rule(float, example, low=0, low_open=True, **kw)


def fraction(example: float, high_open: bool = True, low_open: bool = False, **kw: Any) -> Rule:
    return Rule(float, example, low=0, high=1, low_open=low_open, high_open=high_open, **kw)


def flag(example: bool = True) -> Rule:
    return Rule(bool, str(example).lower())


def choice(*choices: Any, nullable: bool = False) -> Rule:
    return Rule(str, choices[0], choices=choices, nullable=nullable)


# -- checking one value ------------------------------------------------------------------------------------------
def _fail(key: str, rule: Rule, value: Any) -> ConfigError:
    shown = repr(value) if isinstance(value, str) else json.dumps(value, default=str)  # as YAML would: true, null
    why = f" ({rule.why})" if rule.why else ""
    example = str(rule.example).replace(" ", "")
    return ConfigError(f"{key} must be {rule.describe()}{why}, got {shown}; e.g. {key}={example}")


def _coerce_number(value: Any, kind: type) -> Any:
    """A number from an int, float or numeric string (env values arrive as strings); booleans are not numbers."""
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, str):
        value = value.strip()
        value = float(value) if any(c in value.lower() for c in ".en") else int(value)  # ValueError if not numeric
    if not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError
    if kind is int:
        if not float(value).is_integer():
            raise ValueError
        return int(value)
    return value


def check_value(key: str, value: Any, rule: Rule) -> Any:
    """The value, coerced to the rule's type, or a ConfigError naming the key and an example."""
    if value is None:
        if rule.nullable:
            return None
        raise _fail(key, rule, value)
    if rule.kind is list:
        assert rule.item is not None
        if not isinstance(value, list | tuple) or (rule.length and len(value) != rule.length):
            raise _fail(key, rule, value)
        try:
            return [check_value(f"{key}[{i}]", item, rule.item) for i, item in enumerate(value)]
        except ConfigError:
            raise _fail(key, rule, value) from None
    if rule.kind is bool:
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        if not isinstance(value, bool):
            raise _fail(key, rule, value)
        return value
    if rule.kind is str:
        if not isinstance(value, str) or (rule.choices and value not in rule.choices):
            raise _fail(key, rule, value)
        return value
    try:
        number = _coerce_number(value, rule.kind)
    except (TypeError, ValueError):
        raise _fail(key, rule, value) from None
    if number in rule.extra:
        return number
    if rule.low is not None and (number < rule.low or (rule.low_open and number == rule.low)):
        raise _fail(key, rule, value)
    if rule.high is not None and (number > rule.high or (rule.high_open and number == rule.high)):
        raise _fail(key, rule, value)
    return number
