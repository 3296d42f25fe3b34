"""Synthetic low-rank problems, the reference problems (README), and ratings data.

Targets follow the papers: the ``r`` singular values of a Gaussian matrix at spread-out
indices ``0, d/(2r), 2d/(2r), …`` together with its singular vectors. Observed sets are
sampled as flat indices, so even a 138,493 × 26,744 problem never builds an ``m × n``
array.

Real ratings come from the GroupLens MovieLens files, read from local disk
(:func:`load_movielens`), or fetched once into the cache folder when asked with
``download=True`` with pooch (checksum verified). The ``manifest.json`` shipped in this
package lists their sources, checksums and licences.
"""

from ._movielens import (  # noqa: F401
    MOVIELENS,
    Ratings,
    data_home,
    download_movielens,
    load_movielens,
    movielens_registry,
)
from ._synthetic import (
    PROBLEMS,
    CompletionProblem,
    LowRankMatrix,
    low_rank_matrix,
    make_problem,
    sample_entries,
)

__all__ = [
    "MOVIELENS",
    "PROBLEMS",
    "CompletionProblem",
    "LowRankMatrix",
    "Ratings",
    "download_movielens",
    "load_movielens",
    "low_rank_matrix",
    "make_problem",
    "movielens_registry",
    "sample_entries",
]
