"""Hyper-parameter checks, with scikit-learn's conventions but only its public API.

:func:`check_params` checks an estimator's hyper-parameters against its
``_parameter_constraints`` (:class:`Interval`, :class:`StrOptions`, types and a few
named constraints): an :class:`InvalidParameterError` names the parameter, the value and
what is accepted.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

__all__ = ["Interval", "InvalidParameterError", "StrOptions", "check_params"]


class InvalidParameterError(ValueError, TypeError):
    """A hyper-parameter of the wrong type or out of its range, found at ``fit``.

    A subclass of both :class:`ValueError` and :class:`TypeError`, as scikit-learn's own
    error is, so callers can catch either.
    """


class Interval:
    """Numbers of type ``kind`` between ``left`` and ``right`` (``None`` = unbounded).

    Parameters
    ----------
    kind : type
        :class:`numbers.Integral` or :class:`numbers.Real`. Booleans are refused either way.
    left, right : float or None
        The bounds.
    closed : {"left", "right", "both", "neither"}
        Which bounds belong to the interval.
    """

    def __init__(self, kind: type, left: float | None, right: float | None, *, closed: str) -> None:
        self.kind, self.left, self.right, self.closed = kind, left, right, closed

    def is_satisfied_by(self, value: Any) -> bool:
        """Whether ``value`` lies in the interval (and has the right type)."""
        if isinstance(value, bool) or not isinstance(value, self.kind):
            return False
        if self.kind is numbers.Real and np.isnan(value):
            return False
        if self.left is not None:
            if value < self.left or (value == self.left and self.closed in ("right", "neither")):
                return False
        if self.right is not None:
            if value > self.right or (value == self.right and self.closed in ("left", "neither")):
                return False
        return True

    def __str__(self) -> str:
        kind = "an int" if self.kind is numbers.Integral else "a float"

        def bound(b: float | None, inf: str) -> str:
            if b is None:
                return inf
            return str(int(b)) if self.kind is numbers.Integral else repr(float(b))

        lo, hi = bound(self.left, "-inf"), bound(self.right, "inf")
        lb = "[" if self.closed in ("left", "both") and self.left is not None else "("
        rb = "]" if self.closed in ("right", "both") and self.right is not None else ")"
        return f"{kind} in the range {lb}{lo}, {hi}{rb}"


class StrOptions:
    """One of a fixed set of strings."""

    def __init__(self, options: set[str]) -> None:
        self.options = options

    def is_satisfied_by(self, value: Any) -> bool:
        """Whether ``value`` is one of the options."""
        return isinstance(value, str) and value in self.options

    def __str__(self) -> str:
        return "a str among {" + ", ".join(repr(o) for o in sorted(self.options)) + "}"


def _satisfies(value: Any, constraint: Any) -> bool:
    if constraint is None:
        return value is None
    if constraint == "boolean":
        return isinstance(value, (bool, np.bool_))
    if constraint == "verbose":
        return isinstance(value, (numbers.Integral, np.bool_)) and not value < 0
    if constraint == "random_state":
        if value is None or isinstance(value, np.random.RandomState):
            return True
        return (
            isinstance(value, numbers.Integral)
            and not isinstance(value, bool)
            and 0 <= value < 2**32
        )
    if isinstance(constraint, type):
        return isinstance(value, constraint)
    return constraint.is_satisfied_by(value)


def _describe(constraint: Any) -> str:
    if constraint is None:
        return "None"
    if constraint == "boolean":
        return "a bool"
    if constraint == "verbose":
        return "a non-negative int or a bool"
    if constraint == "random_state":
        return "an int in the range [0, 2**32 - 1], a numpy.random.RandomState instance or None"
    if isinstance(constraint, type):
        return f"an instance of {constraint.__module__}.{constraint.__qualname__}".replace(
            "builtins.", ""
        )
    return str(constraint)


def check_params(estimator: Any) -> None:
    """Check an estimator's hyper-parameters against its ``_parameter_constraints``.

    Each entry maps a parameter name to a list of accepted constraints (an
    :class:`Interval`, :class:`StrOptions`, a type, ``None``, or one of the strings
    ``"boolean"``, ``"verbose"`` and ``"random_state"``); a value must satisfy at
    least one; ``"no_validation"`` instead of a list leaves the parameter to the
    estimator. Called at the start of ``fit``, never in ``__init__``.

    Parameters
    ----------
    estimator : estimator instance
        Any object with ``get_params`` and a class-level ``_parameter_constraints``.

    Raises
    ------
    InvalidParameterError
        Naming the estimator and the parameter, what was given and what is accepted.
    """
    params = estimator.get_params(deep=False)
    for name, constraints in type(estimator)._parameter_constraints.items():
        value = params[name]
        if constraints == "no_validation" or any(_satisfies(value, c) for c in constraints):
            continue
        expected = [_describe(c) for c in constraints]
        accepted = (
            expected[0]
            if len(expected) == 1
            else (", ".join(expected[:-1]) + " or " + expected[-1])
        )
        raise InvalidParameterError(
            f"The {name!r} parameter of {type(estimator).__name__} must be {accepted}. "
            f"Got {value!r} instead."
        )
