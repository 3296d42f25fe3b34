"""Utilities for users' own test suites: scikit-learn's estimator checks on deepmc."""

from .estimator_checks import expected_failed_checks

__all__ = ["expected_failed_checks"]
