"""A realistic card-transaction data set, generated with a fixed seed.

Customers have a home country, a typical spend and favourite merchant
categories; merchants have a category and a few are compromised. Fraud is
rare (about 2%) and has a learnable, noisy signal: unusually large amounts
for the customer, night hours, foreign and card-not-present transactions,
risky categories, and compromised merchants.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

CATEGORIES = {  # name: (median amount, fraud risk, share of card-present)
    "grocery": (42.0, -0.6, 0.95),
    "restaurants": (35.0, -0.4, 0.9),
    "fuel": (55.0, -0.2, 0.97),
    "utilities": (90.0, -0.8, 0.1),
    "health": (60.0, -0.5, 0.85),
    "entertainment": (40.0, 0.0, 0.6),
    "travel": (420.0, 0.6, 0.3),
    "online_retail": (75.0, 0.7, 0.0),
    "electronics": (260.0, 0.9, 0.5),
    "jewelry": (650.0, 1.1, 0.7),
}
TARGET_FRAUD_RATE = 0.02


def generate_transactions(
    n: int = 60_000,
    *,
    n_customers: int = 3_000,
    n_merchants: int = 800,
    days: int = 90,
    start: str = "2026-08-01",
    seed: int = 7,
    shift_after_day: int | None = 45,
) -> pd.DataFrame:
    """``n`` transactions over ``days`` days, sorted by time, with an ``is_fraud`` label.

    From ``shift_after_day`` on, the world changes without warning, as it does:
    prices rise about 12% and foreign transactions double.
    """
    rng = np.random.default_rng(seed)
    names = np.array(list(CATEGORIES))
    median, risk, present = (np.array([v[i] for v in CATEGORIES.values()]) for i in range(3))

    # Customers: typical spend multiplier and favourite categories.
    spend = rng.lognormal(0.0, 0.45, n_customers)
    tastes = rng.dirichlet(np.full(len(names), 0.6), n_customers)
    # Merchants: one category each; about 1.5% are compromised.
    merchant_cat = rng.integers(0, len(names), n_merchants)
    compromised = rng.random(n_merchants) < 0.015

    customer = rng.integers(0, n_customers, n)
    # Category by each customer's tastes (inverse-CDF sampling, vectorised).
    cum = np.cumsum(tastes[customer], axis=1)
    cat = np.minimum((cum < rng.random(n)[:, None]).sum(axis=1), len(names) - 1)
    # A merchant of that category.
    by_cat = [np.flatnonzero(merchant_cat == c) for c in range(len(names))]
    merchant = np.array([by_cat[c][rng.integers(0, len(by_cat[c]))] for c in cat])

    # Time: uniform days, daytime-heavy hours.
    hour_weights = np.array(
        [1, 1, 1, 1, 1, 2, 4, 6, 8, 9, 9, 10, 11, 10, 9, 9, 9, 10, 11, 10, 8, 6, 4, 2], dtype=float
    )
    hour = rng.choice(24, n, p=hour_weights / hour_weights.sum())
    day = rng.integers(0, days, n)
    seconds = rng.integers(0, 3600, n)
    timestamp = (
        pd.Timestamp(start, tz="UTC")
        + pd.to_timedelta(day, "D")
        + pd.to_timedelta(hour, "h")
        + pd.to_timedelta(seconds, "s")
    )

    later = day >= shift_after_day if shift_after_day is not None else np.zeros(n, bool)
    amount = np.round(
        median[cat] * spend[customer] * rng.lognormal(0.0, 0.55, n) * np.where(later, 1.12, 1.0), 2
    )
    is_foreign = rng.random(n) < np.where(later, 0.10, 0.05)
    card_present = rng.random(n) < present[cat]

    night = (hour < 6) | (hour >= 23)
    unusual = np.log(amount / (median[cat] * spend[customer]))
    logit = (
        2.6 * unusual
        + 2.0 * night
        + 2.5 * is_foreign
        + 1.5 * ~card_present
        + risk[cat]
        + 1.5 * compromised[merchant]
        + rng.normal(0.0, 0.3, n)
    )
    intercept = _intercept_for(logit, TARGET_FRAUD_RATE)
    is_fraud = rng.random(n) < 1.0 / (1.0 + np.exp(-(logit + intercept)))

    frame = pd.DataFrame(
        {
            "transaction_id": np.arange(1, n + 1),
            "timestamp": timestamp,
            "customer_id": customer + 10_000,
            "customer_email": np.char.add(
                np.char.add("c", (customer + 10_000).astype(str)), "@mail.test"
            ),
            "merchant_id": merchant + 50_000,
            "merchant_category": pd.Categorical(names[cat], categories=list(names)),
            "amount": amount,
            "is_foreign": is_foreign,
            "card_present": card_present,
            "is_fraud": is_fraud,
        }
    )
    frame = frame.sort_values("timestamp", kind="stable", ignore_index=True)
    frame["transaction_id"] = np.arange(1, n + 1)
    return frame


def _intercept_for(logit: np.ndarray, rate: float) -> float:
    """The intercept that makes the mean fraud probability equal ``rate`` (bisection)."""
    lo, hi = -20.0, 5.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if np.mean(1.0 / (1.0 + np.exp(-(logit + mid)))) > rate:
            hi = mid
        else:
            lo = mid
    return (lo + hi) / 2


def inject_bad_rows(frame: pd.DataFrame, rate: float = 0.004, *, seed: int = 11) -> pd.DataFrame:
    """Damage about ``rate`` of the rows the way upstream systems do: negative or missing
    amounts, a category nobody told us about. Validation must catch every one."""
    rng = np.random.default_rng(seed)
    out = frame.copy()
    out["merchant_category"] = out["merchant_category"].astype(object)
    out["amount"] = out["amount"].astype(float)
    picked = rng.choice(len(out), size=max(3, int(len(out) * rate)), replace=False)
    kinds = rng.integers(0, 3, len(picked))
    out.loc[out.index[picked[kinds == 0]], "amount"] = -out["amount"].iloc[picked[kinds == 0]]
    out.loc[out.index[picked[kinds == 1]], "amount"] = np.nan
    out.loc[out.index[picked[kinds == 2]], "merchant_category"] = "crypto_exchange"
    return out
