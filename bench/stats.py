"""Small statistics for the benchmarks: percentiles and the median of runs.

Every scenario runs at least three times. `aggregate` turns a list of per-run dicts
into one dict whose plain keys hold the median over the runs, with `<key>_min` and
`<key>_max` beside each, so the JSON's headline numbers are medians and the spread
stays visible. A run's value of None is a figure it could not measure. By default
any missing run makes the median None (and `<key>_runs_missing` says how many
missed). For a time-to-finish figure such as a convergence time, pass the key in
`none_is_worst`: a run that never finished counts as infinitely slow, so the median
is still a real number when most runs finished, and None when most did not.

CPU figures are normalised here too: milliseconds per message per process, and a
load in percent of one core per process.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) with linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = math.ceil(rank)
    if low == high:
        return ordered[low]
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def rounded(value: float | None, digits: int = 3) -> float | None:
    """Round for the report; None stays None."""
    return None if value is None else round(value, digits)


def aggregate(runs: Sequence[dict[str, Any]], keys: Iterable[str], digits: int = 3,
              none_is_worst: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Median, min and max over runs of each numeric key."""
    out: dict[str, Any] = {}
    for key in keys:
        values = [r.get(key) for r in runs]
        present = [float(v) for v in values if v is not None]
        missing = len(values) - len(present)
        if key in none_is_worst and present:
            median = statistics.median(present + [math.inf] * missing)
            out[key] = None if math.isinf(median) else round(median, digits)
        elif missing or not present:
            out[key] = None
        else:
            out[key] = round(statistics.median(present), digits)
        if missing:
            out[f"{key}_runs_missing"] = missing
        out[f"{key}_min"] = rounded(min(present), digits) if present else None
        out[f"{key}_max"] = None if missing and key in none_is_worst else (
            rounded(max(present), digits) if present else None)
    return out


def per_message_per_process_ms(cpu_s: float, messages: int, processes: int) -> float | None:
    """CPU seconds that `processes` used together over `messages`, as milliseconds per
    message per process; None when there were no messages or processes."""
    if messages <= 0 or processes <= 0:
        return None
    return cpu_s * 1000.0 / (messages * processes)


def percent_per_process(cores: float, processes: int) -> float | None:
    """A load of `cores` shared by `processes`, as percent of one core each."""
    if processes <= 0:
        return None
    return cores * 100.0 / processes
