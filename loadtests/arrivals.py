"""When requests are sent: the arrival process of a load test (pure, seeded).

``closed``: Locust users send, wait for the answer, think, send again (the default, as before): the offered
rate falls when the server slows down, so queueing hides (coordinated omission).
``poisson``: MLPerf LoadGen's server scenario: send times from a Poisson process of rate R, fixed before the
run and kept whatever the answers do; latency counts from the scheduled time.
"""

from __future__ import annotations

import numpy as np

ARRIVALS = ("closed", "poisson")
# Each random stream has its own seed: [run seed, stream, generator process]; the streams never share draws.
ARRIVAL_STREAM, CONTENT_STREAM, ATTACKER_STREAM = 1, 2, 3
SEED_STREAMS = ("send times: [seed, 1, process, trial]; benign requests: [seed, 2, process, trial]; "
                "attackers: [seed, 3, attacker, 0]")  # written into every result file


def stream_rng(seed: int, stream: int, process: int = 0, trial: int = 0) -> np.random.Generator:
    """``trial``: a max-rate search's trial index, so each trial draws its own times and requests."""
    return np.random.default_rng([seed, stream, process, trial])


def poisson_send_times(rate_per_s: float, duration_s: float, rng: np.random.Generator) -> np.ndarray:
    """Send times in [0, duration_s) in seconds from the start: exponential gaps of mean 1/rate_per_s."""
    if not rate_per_s > 0 or not duration_s > 0:
        raise ValueError(f"a Poisson schedule needs rate_per_s > 0 and duration_s > 0, got {rate_per_s} and {duration_s}")
    expected = rate_per_s * duration_s
    n = int(expected + 6 * np.sqrt(expected) + 16)  # enough gaps to pass duration_s but for ~1e-9 of runs
    times = np.cumsum(rng.exponential(1.0 / rate_per_s, n))
    while times[-1] < duration_s:  # the rare run that needs more: draw on from the same stream
        times = np.concatenate([times, times[-1] + np.cumsum(rng.exponential(1.0 / rate_per_s, n))])
    return times[times < duration_s]


def split_schedule(rate_per_s: float, duration_s: float, seed: int, processes: int, trial: int = 0) -> list[np.ndarray]:
    """One Poisson stream of rate R/N per generator process, each from its own seed: merged, a Poisson process
    of rate R (the superposition of independent Poisson processes is Poisson with the summed rate)."""
    return [poisson_send_times(rate_per_s / processes, duration_s, stream_rng(seed, ARRIVAL_STREAM, p, trial))
            for p in range(processes)]
