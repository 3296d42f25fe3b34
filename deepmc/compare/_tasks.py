"""Problems for the comparison: reference names, synthetic specs and ratings sources."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

from .._validation import Observations
from ..datasets import PROBLEMS, load_movielens, make_problem
from ..models import METHODS, make_estimator

__all__ = ["METHODS", "RATINGS_RANK", "THRESHOLDS", "Task", "load_task", "parse_problem"]

#: Default recovery-error thresholds of the table (the targets of the papers' figures).
THRESHOLDS: tuple[float, ...] = (1e-3, 1e-6)
#: Default r̂ for ratings, whose true rank is unknown.
RATINGS_RANK = 10

_SPEC = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*(?:,(.*))?$")
_SPEC_KEYS = {
    "rank": ("rank", int),
    "r": ("rank", int),
    "fraction": ("fraction", float),
    "p": ("fraction", float),
    "count": ("count", int),
    "n": ("count", int),
    "noise": ("noise", float),
    "depth": ("depth", int),
}


def is_synthetic_spec(problem: str) -> bool:
    """Whether ``problem`` is a reference name or looks like ``"MxN,..."``."""
    return problem in PROBLEMS or _SPEC.match(problem) is not None


def parse_problem(spec: str) -> dict[str, Any]:
    """Parse a synthetic problem spec ``"MxN,rank=R,fraction=F"``.

    Keys: ``rank`` (``r``), ``fraction`` (``p``) or ``count`` (``n``), ``noise``, ``depth``.

    Parameters
    ----------
    spec : str

    Returns
    -------
    dict
        Keyword arguments of :func:`deepmc.datasets.make_problem` (and ``depth``).

    Raises
    ------
    ValueError
        If ``spec`` is not of that form, a key is unknown, a value does not parse, or the
        rank is missing.
    """
    match = _SPEC.match(spec)
    if match is None:
        raise ValueError(f"problem: {spec!r} is not a synthetic spec like '300x200,rank=4,p=0.3'.")
    out: dict[str, Any] = {"shape": (int(match.group(1)), int(match.group(2)))}
    for item in filter(None, (match.group(3) or "").split(",")):
        key, sep, value = item.partition("=")
        if not sep or key.strip() not in _SPEC_KEYS:
            raise ValueError(
                f"problem: cannot read {item!r} in {spec!r}; expected key=value with key in "
                f"{sorted(_SPEC_KEYS)}."
            )
        name, kind = _SPEC_KEYS[key.strip()]
        try:
            out[name] = kind(value)
        except ValueError:
            raise ValueError(
                f"problem: {key.strip()}={value!r} in {spec!r} is not a valid {kind.__name__}."
            ) from None
    if "rank" not in out:
        raise ValueError(f"problem: {spec!r} needs a rank, e.g. '{spec},rank=5'.")
    if "fraction" not in out and "count" not in out:
        out["fraction"] = 0.3
    return out


@dataclass
class Task:
    """One problem prepared for comparison.

    Attributes
    ----------
    name : str
    kind : {"synthetic", "ratings"}
    train : Observations
        What the estimators are fitted on (ratings: minus the mean and biases).
    eval_set : tuple
        Held-out ``(rows, cols, values, shape)`` in the same units as ``train``.
    rank : int
        r̂ used by the narrow (width 2r̂) and compressed networks.
    depth : int
    init_scale : float or None
        ε (``None``: the estimators' ``"auto"``). Synthetic problems leave it to the
        estimators; the reference value of a problem (the papers' ε) is in
        ``info["reference_init_scale"]``.
    offset : float
        The global mean removed from ratings (with the biases), 0 otherwise.
    info : dict
        Details; ``info["params"]`` holds estimator parameters of the task (ratings: the
        step size, dtype, ``max_iter`` and ``tol`` of ``RatingsCompletion``).
    """

    name: str
    kind: str
    train: Observations
    eval_set: tuple
    rank: int
    depth: int = 3
    init_scale: float | None = None
    offset: float = 0.0
    info: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return self.train.shape

    @property
    def metric(self) -> str:
        """The history column that measures progress: relative error or RMSE."""
        return "eval_rmse" if self.kind == "ratings" else "eval_error"


def _synthetic_task(problem: str, *, rank: int | None, depth: int | None, seed: int) -> Task:
    """A reference problem or a synthetic spec, with its held-out entries."""
    if problem in PROBLEMS:
        p = make_problem(problem, random_state=seed)
    else:
        spec = parse_problem(problem)
        spec_depth = spec.pop("depth", None)
        p = make_problem(random_state=seed, **spec)
        p = p if spec_depth is None else replace(p, depth=spec_depth)
    return Task(
        name=p.name,
        kind="synthetic",
        train=p.train,
        eval_set=p.eval_set(),
        rank=rank or p.rank,
        depth=depth or p.depth,
        info={"true_rank": p.rank, "reference_init_scale": p.init_scale},
    )


def _ratings_task(
    source: str,
    *,
    rank: int | None,
    depth: int | None,
    seed: int,
    test_fraction: float,
    cache_dir: str | None,
    download: bool = False,
) -> Task:
    """Ratings: a seeded held-out split; the networks fit what the biases leave.

    The split is seeded; the global mean and the user / item biases of
    :func:`deepmc.ratings.fit_biases` are estimated on the training part and subtracted
    from both parts, and the plain networks are fitted to the residual matrix with the
    step size and ε of :class:`deepmc.ratings.RatingsCompletion`. The held-out RMSE of
    the residual is the RMSE of the (unclipped) predicted ratings. This function is the
    one place to change to compare another ratings pipeline.
    """
    from ..ratings import RatingsCompletion, fit_biases

    ratings = load_movielens(source, cache_dir=cache_dir, download=download)
    train, test = ratings.train_test_split(test_fraction, random_state=seed)
    tr, te = train.to_observations(), test.to_observations()
    defaults = RatingsCompletion().get_params()
    mean, bu, bi = fit_biases(tr.rows, tr.cols, tr.values, tr.shape, reg=defaults["bias_reg"])
    return Task(
        name=ratings.name,
        kind="ratings",
        train=tr._replace(values=tr.values - mean - bu[tr.rows] - bi[tr.cols]),
        eval_set=(te.rows, te.cols, te.values - mean - bu[te.rows] - bi[te.cols], te.shape),
        rank=rank or RATINGS_RANK,
        depth=depth or 3,
        init_scale=defaults["init_scale"],
        offset=mean,
        info={
            "n_train": tr.n_observed,
            "n_test": te.n_observed,
            "params": {k: defaults[k] for k in ("lr", "dtype", "max_iter", "tol")},
        },
    )


def load_task(
    problem: str,
    *,
    rank: int | None = None,
    depth: int | None = None,
    seed: int = 0,
    test_fraction: float = 0.2,
    cache_dir: str | None = None,
    download: bool = False,
) -> Task:
    """Build the :class:`Task` for a problem name, synthetic spec or ratings source.

    Parameters
    ----------
    problem : str
        ``"A"``, ``"B"``, ``"C"`` (the reference problems of
        :data:`deepmc.datasets.PROBLEMS`); a synthetic spec such as
        ``"300x200,rank=4,fraction=0.25"`` (see :func:`parse_problem`); or a MovieLens
        file, folder or release name (see :func:`deepmc.datasets.load_movielens`).
    rank : int, default=None
        r̂; default the true rank (synthetic) or 10 (ratings).
    depth : int, default=None
        L; default the problem's (3).
    seed : int, default=0
        Seed of the problem, the split and the initialisations.
    test_fraction : float, default=0.2
        Held-out fraction of the ratings.
    cache_dir : str, default=None
        Where MovieLens release names are looked for.
    download : bool, default=False
        Fetch a MovieLens release absent from the cache folder (see
        :func:`deepmc.datasets.load_movielens`).

    Returns
    -------
    Task
    """
    if is_synthetic_spec(problem):
        return _synthetic_task(problem, rank=rank, depth=depth, seed=seed)
    return _ratings_task(
        problem,
        rank=rank,
        depth=depth,
        seed=seed,
        test_fraction=test_fraction,
        cache_dir=cache_dir,
        download=download,
    )


def task_estimator(method: str, task: Task, **params: Any) -> Any:
    """The estimator of ``method`` for ``task``, with the common ``params``.

    Parameters
    ----------
    method : {"full", "narrow", "compressed", "compressed-no-dlr"}
        A name of :data:`deepmc.models.METHODS`.
    task : Task
    **params
        Passed to every estimator (``max_iter``, ``tol``, ``device``, …).

    Returns
    -------
    estimator
    """
    common = {"depth": task.depth, **params}
    if task.init_scale is not None:
        common.setdefault("init_scale", task.init_scale)
    return make_estimator(method, rank=task.rank, **common)
