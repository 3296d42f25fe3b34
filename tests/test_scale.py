"""A 200,000 × 200,000 compressed fit in memory far below m·n floats."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

_SCRIPT = textwrap.dedent(
    """
    import json, resource, warnings
    import numpy as np
    from deepmc import CompressedDeepMatrixCompletion
    from deepmc.datasets import make_problem

    problem = make_problem(shape=(200_000, 200_000), rank=5, count=1_000_000, random_state=0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    est = CompressedDeepMatrixCompletion(rank=5, max_iter=5, tol=0.0, check_every=1,
                                         init_scale=1e-3, device="cpu", random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # max_iter=5 is the point: a few steps only
        est.fit(problem.train)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    losses = est.history_["loss"].tolist()
    pred = est.predict_entries(problem.test_rows[:1000], problem.test_cols[:1000])
    print(json.dumps({"before": before, "peak": peak, "n_iter": est.n_iter_,
                      "losses": losses, "finite": bool(np.isfinite(pred).all()),
                      "U": list(est.U_.shape)}))
    """
)


@pytest.mark.slow
def test_compressed_fit_at_200k_by_200k_stays_small():
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT], capture_output=True, text=True, timeout=600, check=True
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    m = n = 200_000
    dense_bytes = m * n * 8  # one float64 m×n array: 320 GB
    assert result["n_iter"] == 5
    assert result["U"] == [m, 10]
    assert result["finite"]
    assert result["losses"][-1] < result["losses"][0]  # it trains
    # peak RSS of the whole process (data generation included) vs one m×n array
    assert result["peak"] < 3 * 2**30
    assert result["peak"] < dense_bytes / 100
