"""Bias metrics for a classifier's scores across identity subgroups (Borkan et al. 2019).

A toxicity model trained on comments where identity terms ("gay", "muslim", "black") appear mostly
in abusive text learns the term itself as a signal. One overall AUC hides that; these metrics split
the ranking problem by subgroup (the rows that mention an identity) and background (all others):

    subgroup AUC : AUC on subgroup rows only. Low = the model cannot separate toxic from
                   non-toxic comments *about* the group.
    BPSN AUC     : background positives + subgroup negatives. Low = benign comments that
                   mention the group score above toxic comments that do not (false positives
                   driven by the identity term).
    BNSP AUC     : background negatives + subgroup positives. Low = toxic comments about the
                   group score below benign ones that do not mention it (missed abuse).

Jigsaw Unintended Bias in Toxicity Classification (2019) folds them into one number:

    final = w * AUC_overall + (1 - w) * mean_{m in (subgroup, BPSN, BNSP)} M_p(m_1, ..., m_G)
    M_p(x) = (mean_g x_g ** p) ** (1 / p),  p = -5, w = 0.25

A power mean with p = -5 sits close to the minimum, so one badly served group pulls the score down.

Every function takes labels `y` (0/1), real scores `s` (higher = more likely violating) and a
boolean `mask` of subgroup rows. An AUC with only one class among its rows is undefined: these
functions return NaN for it (a small subgroup with no toxic comment is common), and the power mean
skips NaN values, as the Jigsaw scorer does by scoring only subgroups with both classes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from sklearn.metrics import roc_auc_score

METRICS = ("subgroup_auc", "bpsn_auc", "bnsp_auc")


def _inputs(y, s, mask) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ya = np.asarray(y).reshape(-1)
    sa = np.asarray(s, dtype=np.float64).reshape(-1)
    ma = np.asarray(mask).reshape(-1)
    if not (len(ya) == len(sa) == len(ma)):
        raise ValueError(f"lengths differ: {len(ya)} labels, {len(sa)} scores, {len(ma)} mask")
    if len(ya) == 0:
        raise ValueError("empty input: no labels")
    if ma.dtype != np.bool_:
        if not np.all((ma == 0) | (ma == 1)):
            raise ValueError("mask must be boolean (or 0/1)")
        ma = ma.astype(bool)
    if not np.all((ya == 0) | (ya == 1)):
        raise ValueError("labels must be 0 or 1")
    if not np.all(np.isfinite(sa)):
        raise ValueError("scores contain NaN or infinity")
    return ya.astype(np.int64), sa, ma


def _auc_or_nan(y: np.ndarray, s: np.ndarray) -> float:
    """ROC-AUC = P(score of a random positive > a random negative), ties 1/2; NaN if one class."""
    if len(y) == 0 or y.min() == y.max():
        return float("nan")
    return float(roc_auc_score(y, s))


def subgroup_auc(y, s, mask) -> float:
    """AUC over rows with mask = True (the subgroup). NaN if they hold one class only."""
    ya, sa, ma = _inputs(y, s, mask)
    return _auc_or_nan(ya[ma], sa[ma])


def bpsn_auc(y, s, mask) -> float:
    """Background-Positive, Subgroup-Negative AUC: rows (~mask & y = 1) | (mask & y = 0).

    NaN if there are no background positives or no subgroup negatives.
    """
    ya, sa, ma = _inputs(y, s, mask)
    keep = (~ma & (ya == 1)) | (ma & (ya == 0))
    return _auc_or_nan(ya[keep], sa[keep])


def bnsp_auc(y, s, mask) -> float:
    """Background-Negative, Subgroup-Positive AUC: rows (~mask & y = 0) | (mask & y = 1).

    NaN if there are no background negatives or no subgroup positives.
    """
    ya, sa, ma = _inputs(y, s, mask)
    keep = (~ma & (ya == 0)) | (ma & (ya == 1))
    return _auc_or_nan(ya[keep], sa[keep])


def bias_table(y, s, identity_masks: Mapping[str, object]) -> dict[str, dict[str, float]]:
    """{subgroup name: {"subgroup_auc", "bpsn_auc", "bnsp_auc", "n", "n_pos"}} for each mask.

    `n` is the number of subgroup rows and `n_pos` the violating ones among them (small n means a
    wide interval on every AUC here; read them together). Metrics are NaN where undefined.
    """
    table: dict[str, dict[str, float]] = {}
    for name, mask in identity_masks.items():
        ya, sa, ma = _inputs(y, s, mask)
        table[name] = {
            "subgroup_auc": subgroup_auc(ya, sa, ma),
            "bpsn_auc": bpsn_auc(ya, sa, ma),
            "bnsp_auc": bnsp_auc(ya, sa, ma),
            "n": int(ma.sum()),
            "n_pos": int(ya[ma].sum()),
        }
    return table


def power_mean(values: Sequence[float], p: float) -> float:
    """Generalized mean M_p(x) = (1/n * sum_i x_i ** p) ** (1/p) over the non-NaN x_i >= 0.

    p = 1 is the arithmetic mean, p = 0 the geometric mean (its limit), p -> -inf the minimum.
    For p < 0 a zero value gives 0 (the limit). NaN values are skipped; all NaN (or no values)
    gives NaN.

    Raises:
        ValueError: a negative value (AUCs are in [0, 1]).
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return float("nan")
    if np.any(v < 0):
        raise ValueError("power_mean needs non-negative values")
    if p == 0:
        if np.any(v == 0):
            return 0.0
        return float(np.exp(np.mean(np.log(v))))
    if p < 0 and np.any(v == 0):
        return 0.0
    return float(np.mean(v**p) ** (1.0 / p))


def final_bias_metric(
    overall_auc: float, table: Mapping[str, Mapping[str, float]], p: float = -5, w: float = 0.25
) -> float:
    """Jigsaw's score: w * overall_auc + (1 - w) * mean over the three metrics of M_p(subgroups).

    With the competition's weights (0.25 on the overall AUC and on each of the three power
    means) this is 0.25 * AUC + 0.25 * (M_p(subgroup) + M_p(BPSN) + M_p(BNSP)). A metric whose
    subgroups are all NaN is left out of the mean; if all three are, the result is NaN.

    Raises:
        ValueError: w outside [0, 1] or an empty table.
    """
    if not 0 <= w <= 1:
        raise ValueError(f"final_bias_metric needs 0 <= w <= 1, got {w}")
    if not table:
        raise ValueError("final_bias_metric needs at least one subgroup")
    means = [power_mean([row[m] for row in table.values()], p) for m in METRICS]
    means = [m for m in means if not math.isnan(m)]
    if not means:
        return float("nan")
    return float(w * overall_auc + (1 - w) * np.mean(means))


def worst_subgroup(
    table: Mapping[str, Mapping[str, float]], metric: str = "subgroup_auc"
) -> tuple[str, float]:
    """(name, value) of the subgroup with the lowest `metric`, NaN skipped; ("", nan) if none."""
    rows = [(name, row[metric]) for name, row in table.items() if not math.isnan(row[metric])]
    if not rows:
        return "", float("nan")
    return min(rows, key=lambda r: r[1])


def counterfactual_flip_rate(decisions_a, decisions_b) -> float:
    """Share of paired inputs whose decision changes when only the identity term is swapped.

    flip rate = mean_i [a_i != b_i], where a_i is the decision (0/1 or an action name) on the
    original text and b_i on its counterfactual ("I am a gay man" -> "I am a straight man").
    0 means the identity term never decides the outcome (Garg et al. 2019, counterfactual
    fairness in text classification).

    Raises:
        ValueError: empty input or different lengths.
    """
    a = np.asarray(decisions_a).reshape(-1)
    b = np.asarray(decisions_b).reshape(-1)
    if len(a) != len(b):
        raise ValueError(f"counterfactual_flip_rate: {len(a)} decisions vs {len(b)}")
    if len(a) == 0:
        raise ValueError("counterfactual_flip_rate: no decisions")
    return float(np.mean(a != b))


def bias_markdown(table: Mapping[str, Mapping[str, float]]) -> str:
    """The bias table as a markdown table, one row per subgroup (NaN printed as n/a)."""

    def f(x: float) -> str:
        return "n/a" if math.isnan(x) else f"{x:.3f}"

    lines = [
        "| subgroup | n | violating | subgroup AUC | BPSN AUC | BNSP AUC |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in table.items():
        lines.append(
            f"| {name} | {int(row['n'])} | {int(row.get('n_pos', 0))} | "
            f"{f(row['subgroup_auc'])} | {f(row['bpsn_auc'])} | {f(row['bnsp_auc'])} |"
        )
    return "\n".join(lines)
