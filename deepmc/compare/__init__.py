"""``deepmc compare``: the full-width, narrow and compressed networks side by side.

One problem, one seed, one device; every method is fitted with an evaluation set so its
``history_`` records the held-out error at every check. The run writes

* ``history_<method>.csv`` — each method's ``history_`` (iteration, seconds, loss, …,
  ``eval_error``, ``eval_rmse``);
* ``summary.csv`` — the table printed at the end;
* ``compare.png`` — relative recovery error (held-out RMSE for ratings) against iterations
  and against seconds, log scale, in the style of the papers' figures;
* with ``singular_values=True``, ``singular_values.png`` and
  ``singular_values_<method>.csv`` — the top singular values of the end-to-end matrix
  over training (the law-of-parsimony picture).

Examples
--------
From the shell::

    deepmc compare --problem A --device cpu --output-dir compare-output
    deepmc compare --problem 300x200,rank=4,fraction=0.25 --no-dlr
    deepmc compare --problem ml-100k --download --rank 10 --methods narrow,compressed
    deepmc compare --problem path/to/ratings.csv --methods compressed

From Python:

>>> from deepmc.compare import parse_problem
>>> parse_problem("300x200,rank=4,fraction=0.25")
{'shape': (300, 200), 'rank': 4, 'fraction': 0.25}
"""

# ``x as x``: importable from here as before the split into modules, not in ``__all__``.
from .._trace import end_to_end_singular_values
from .._trace import singular_value_trace as singular_value_trace
from ._cli import configure_parser
from ._report import _summary as _summary
from ._report import format_table as format_table
from ._result import _Result as _Result
from ._run import compare
from ._tasks import METHODS, Task, load_task, parse_problem
from ._tasks import THRESHOLDS as THRESHOLDS

__all__ = [
    "METHODS",
    "Task",
    "compare",
    "configure_parser",
    "end_to_end_singular_values",
    "load_task",
    "parse_problem",
]
