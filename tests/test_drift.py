"""Drift measures: closed-form values and limits."""

from __future__ import annotations

import numpy as np
import pytest

from shared.drift import (
    js_divergence,
    psi,
    psi_from_proportions,
    quantile_edges,
)


@pytest.fixture(scope="module")
def normal():
    return np.random.default_rng(0).normal(size=5000)


def test_psi_identical_is_zero_and_grows_with_shift(normal):
    assert psi(normal, normal) == pytest.approx(0.0, abs=1e-12)
    same = psi(normal, np.random.default_rng(1).normal(size=5000))
    small, large = psi(normal, normal + 0.2), psi(normal, normal + 1.0)
    assert same < 0.02 < small < 0.25 < large


def test_psi_closed_form_on_two_bins():
    # e = (0.5, 0.5), a = (0.9, 0.1): 0.4 ln 1.8 + (-0.4) ln 0.2
    expected = 0.4 * np.log(1.8) - 0.4 * np.log(0.2)
    assert psi_from_proportions([0.5, 0.5], [0.9, 0.1]) == pytest.approx(expected)


def test_psi_of_an_all_zero_column_is_large_and_finite(normal):
    watch = np.abs(normal) * 60
    value = psi(watch, np.zeros(1000))
    assert np.isfinite(value) and value > 1.0


def test_psi_on_constant_reference_and_bad_input():
    assert len(quantile_edges(np.ones(100))) == 1
    assert psi(np.ones(100), np.ones(50)) == pytest.approx(0.0)
    assert psi(np.ones(100), np.zeros(50)) > 1.0
    with pytest.raises(ValueError, match="no finite"):
        psi([], [1.0])
    with pytest.raises(ValueError, match="bins"):
        psi([1.0, 2.0], [1.0], bins=1)


def test_js_identical_zero_disjoint_one():
    assert js_divergence([0.2, 0.8], [0.2, 0.8]) == pytest.approx(0.0, abs=1e-12)
    assert js_divergence([1, 0], [0, 1]) == pytest.approx(1.0)
    assert js_divergence([2, 2], [1, 1]) == pytest.approx(0.0, abs=1e-12)  # normalized
    assert js_divergence({"a": 1.0}, {"b": 1.0}) == pytest.approx(1.0)
    assert 0 < js_divergence({"a": 0.5, "b": 0.5}, {"a": 1.0}) < 1
    with pytest.raises(ValueError):
        js_divergence([0, 0], [1, 0])
    with pytest.raises(ValueError):
        js_divergence([1, 0], [1, 0, 0])
