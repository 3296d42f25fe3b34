"""One registry of networks, and the per-group step ratios it hands the optimizer."""

from __future__ import annotations

import pytest
import torch

from deepmc import compare, models
from deepmc._solver import make_optimizer
from deepmc.compare._tasks import task_estimator
from deepmc.models import CompressedDeepMatrixCompletion, DeepMatrixCompletion


def test_compare_uses_the_models_registry():
    # One registry: the comparison's names and labels are the models' own objects.
    assert compare.METHODS is models.METHODS
    assert not hasattr(compare, "make_estimator")


@pytest.mark.parametrize("method", list(models.METHODS))
def test_task_estimator_builds_the_registry_network(method):
    task = compare.load_task("20x16,rank=2,fraction=0.5", seed=0)
    est = task_estimator(method, task, max_iter=5)
    ref = models.make_estimator(method, rank=task.rank, depth=task.depth, max_iter=5)
    assert type(est) is type(ref)
    assert est.get_params()["max_iter"] == 5
    if isinstance(ref, CompressedDeepMatrixCompletion):
        assert est.rank == task.rank
        assert est.factor_lr_ratio == ref.factor_lr_ratio
    else:
        assert isinstance(est, DeepMatrixCompletion)
        assert est.width == ref.width


def _params():
    return {
        "cores": [torch.zeros(2, 2, requires_grad=False)],
        "factors": [torch.zeros(3, 2), torch.zeros(4, 2)],
    }


def test_lr_ratios_scale_each_group():
    opt = make_optimizer(_params(), 0.5, lr_ratios={"factors": 0.2})
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs == {"cores": 0.5, "factors": pytest.approx(0.1)}


@pytest.mark.parametrize("kind", ["gd", "momentum", "adam"])
def test_misspelt_lr_ratio_key_is_refused(kind):
    # "factor" for "factors" would otherwise train U and V at η instead of γη.
    with pytest.raises(ValueError, match=r"lr_ratios: .*'factor'.*'cores', 'factors'"):
        make_optimizer(_params(), 0.5, lr_ratios={"factor": 0.2}, kind=kind)
