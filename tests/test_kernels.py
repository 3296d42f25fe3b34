"""deepmc._kernels and the plain GD optimizer against dense references, chunking edge cases."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from deepmc._kernels import ObservedPattern, PatternKernels
from deepmc._solver import GradientDescent
from deepmc.models._compressed_step import (
    CompressedWorkspace,
    compressed_loss_and_grads,
    compressed_residual_and_grads,
)


def _pattern(m: int, n: int, N: int, seed: int = 0, empty_rows: bool = False):
    rng = np.random.default_rng(seed)
    flat = np.sort(rng.choice(m * n, size=N, replace=False))
    rows, cols = flat // n, flat % n
    if empty_rows:  # no observation in the first and last rows, nor in a middle one
        keep = (rows != 0) & (rows != m - 1) & (rows != m // 2)
        rows, cols = rows[keep], cols[keep]
    r, c = torch.as_tensor(rows), torch.as_tensor(cols)
    return ObservedPattern.from_coo(r, c, (m, n)), r, c


CASES = [
    # (m, n, N, method, chunk_elements)
    (7, 5, 12, "small", None),
    (40, 30, 200, "small", None),
    (7, 5, 12, "dense", None),
    (7, 5, 12, "dense", 5),  # one row per block
    (7, 5, 12, "dense", 1),  # budget below a row: still one row per block
    (7, 5, 12, "sddmm", None),
    (7, 5, 12, "sddmm", 2),  # blocks of ≤ 2 observations (rows with more stay whole)
    (7, 5, 12, "gather", None),
    (7, 5, 12, "gather", 7),  # chunk smaller than k
    (40, 30, 200, "dense", 64),
    (40, 30, 200, "sddmm", 17),
    (40, 30, 200, "gather", 33),
    (1, 9, 4, "auto", None),
    (9, 1, 4, "auto", None),
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("m", "n", "N", "method", "chunk"), CASES)
def test_kernels_match_dense_reference(m, n, N, method, chunk, dtype):
    pat, rows, cols = _pattern(m, n, N)
    kern = PatternKernels(pat, dtype, method=method, chunk_elements=chunk)
    g = torch.Generator().manual_seed(1)
    k = 3
    A = torch.randn(m, k, dtype=torch.float64, generator=g)
    B = torch.randn(n, k, dtype=torch.float64, generator=g)
    vals = torch.randn(rows.shape[0], dtype=torch.float64, generator=g)
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {}
    got = kern.sampled(A.to(dtype), B.to(dtype))
    torch.testing.assert_close(got.double(), (A @ B.T)[rows, cols], **tol)
    R = torch.zeros(m, n, dtype=torch.float64)
    R[rows, cols] = vals
    RB, RtA = kern.matmul_pair(vals.to(dtype), A.to(dtype), B.to(dtype))
    torch.testing.assert_close(RB.double(), R @ B, **tol)
    torch.testing.assert_close(RtA.double(), R.T @ A, **tol)
    # buffers are reused: a second call with other values is not polluted by the first
    RB2, _ = kern.matmul_pair(2 * vals.to(dtype), A.to(dtype), B.to(dtype))
    torch.testing.assert_close(RB2.double(), 2 * (R @ B), **tol)
    torch.testing.assert_close(RB.double(), R @ B, **tol)  # earlier result not aliased
    # into caller buffers, scaled inside the products
    out = (kern.buffer("RB", (m, k)), kern.buffer("RtA", (n, k)))
    out[0].fill_(float("nan")), out[1].fill_(float("nan"))  # stale contents are ignored
    got_pair = kern.matmul_pair(vals.to(dtype), A.to(dtype), B.to(dtype), alpha=3.0, out=out)
    assert got_pair[0] is out[0] and got_pair[1] is out[1]
    torch.testing.assert_close(out[0].double(), 3 * (R @ B), **tol)
    torch.testing.assert_close(out[1].double(), 3 * (R.T @ A), **tol)
    res = kern.buffer("sampled", (rows.shape[0],)).fill_(float("nan"))
    assert kern.sampled(A.to(dtype), B.to(dtype), out=res) is res
    torch.testing.assert_close(res.double(), (A @ B.T)[rows, cols], **tol)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("method", ["small", "dense", "sddmm", "gather"])
def test_residual_pair_equals_the_separate_products(method, dtype):
    """``residual_pair`` is ``sampled − y`` and ``matmul_pair`` of it, bit for bit.

    The dense targets of the ``"small"`` method follow ``y``: another tensor, or the
    same one modified in place, is used at once.
    """
    m, n, k = 12, 9, 4
    pat, rows, _ = _pattern(m, n, 40, seed=3)
    kern = PatternKernels(pat, dtype, method=method, chunk_elements=10)
    g = torch.Generator().manual_seed(6)
    y = torch.randn(rows.shape[0], dtype=dtype, generator=g)
    for trial in range(4):
        A = torch.randn(m, k, dtype=dtype, generator=g)
        B = torch.randn(n, k, dtype=dtype, generator=g)
        if trial == 1:
            y.mul_(-2.0)  # in place: same tensor, new values
        elif trial == 2:
            y = torch.randn(rows.shape[0], dtype=dtype, generator=g)  # another tensor
        expected_resid = kern.sampled(A, B) - y
        expected = kern.matmul_pair(expected_resid, A, B, alpha=1.5)
        if trial == 3:  # into caller buffers, stale contents ignored
            out = (
                torch.full_like(y, float("nan")),
                kern.tall(m, k).fill_(float("nan")),
                kern.tall(n, k).fill_(float("nan")),
            )
            got = kern.residual_pair(A, B, y, alpha=1.5, out=out)
            assert all(a is b for a, b in zip(got, out, strict=True))
        else:
            got = kern.residual_pair(A, B, y, alpha=1.5)
        torch.testing.assert_close(got[0], expected_resid, rtol=0, atol=0)
        torch.testing.assert_close(got[1], expected[0], rtol=0, atol=0)
        torch.testing.assert_close(got[2], expected[1], rtol=0, atol=0)


def test_buffer_is_persistent_per_name_and_shape():
    kern = PatternKernels(_pattern(6, 5, 10)[0], torch.float32)
    a = kern.buffer("x", (3, 2))
    assert kern.buffer("x", (3, 2)) is a and a.dtype == torch.float32
    assert kern.buffer("x", (2, 3)) is not a and kern.buffer("y", (3, 2)) is not a


@pytest.mark.parametrize(
    ("method", "column_major"),
    [("small", True), ("dense", False), ("sddmm", False), ("gather", False)],
)
def test_tall_layout_follows_the_method(method, column_major):
    """``m × k`` results are column-major for the dense BLAS method only, in every entry point."""
    m, n, k = 12, 9, 4
    pat, rows, _ = _pattern(m, n, 40, seed=3)
    kern = PatternKernels(pat, torch.float64, method=method)
    assert kern.column_major is column_major
    t = kern.tall(m, k)
    assert t.shape == (m, k) and t.t().is_contiguous() is column_major
    named = kern.tall(m, k, name="t")
    assert named.data_ptr() == kern.tall(m, k, name="t").data_ptr() and torch.all(named == 0)
    A, B = torch.randn(m, k, dtype=torch.float64), torch.randn(n, k, dtype=torch.float64)
    RB, RtA = kern.matmul_pair(torch.ones(rows.shape[0], dtype=torch.float64), A, B)
    assert RB.t().is_contiguous() is column_major and RtA.t().is_contiguous() is column_major
    pat._kernels[(torch.float64, rows.device)] = kern
    y = torch.randn(rows.shape[0], dtype=torch.float64)
    cores = [torch.eye(k, dtype=torch.float64)] * 3
    for workspace in (None, CompressedWorkspace(kern, k, len(cores))):
        _, gU, gV, _ = compressed_residual_and_grads(pat, y, 2.0, A, B, cores, workspace=workspace)
        assert gU.t().is_contiguous() is column_major and gV.t().is_contiguous() is column_major


@pytest.mark.parametrize("method", ["small", "dense", "sddmm", "gather"])
def test_kernels_rows_without_observations(method):
    pat, rows, cols = _pattern(10, 6, 30, empty_rows=True)
    kern = PatternKernels(pat, torch.float64, method=method, chunk_elements=6)
    A, B = torch.randn(10, 4, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)
    torch.testing.assert_close(kern.sampled(A, B), (A @ B.T)[rows, cols])
    RB, _ = kern.matmul_pair(torch.ones(rows.shape[0], dtype=torch.float64), A, B)
    assert torch.all(RB[0] == 0) and torch.all(RB[-1] == 0)


def test_auto_method_by_size_and_density():
    assert PatternKernels(_pattern(20, 20, 200)[0], torch.float64).method == "small"
    assert PatternKernels(_pattern(100, 100, 50)[0], torch.float64).method == "small"
    assert PatternKernels(_pattern(200, 100, 4000)[0], torch.float64).method == "dense"
    assert PatternKernels(_pattern(200, 100, 500)[0], torch.float64).method == "sddmm"
    with pytest.raises(ValueError, match="method"):
        PatternKernels(_pattern(5, 5, 5)[0], torch.float64, method="magic")


def test_kernels_cached_per_dtype():
    pat, *_ = _pattern(8, 8, 20)
    assert pat.kernels(torch.float64) is pat.kernels(torch.float64)
    assert pat.kernels(torch.float32) is not pat.kernels(torch.float64)


@pytest.mark.parametrize("reuse", [False, True])
@pytest.mark.parametrize("method", ["small", "dense", "sddmm", "gather"])
def test_compressed_residual_and_grads_match_autograd(method, reuse):
    """The step equals autograd on the dense loss to rounding (1e-12), for every kernel path.

    With ``reuse`` the results land in a workspace; a second call with other
    parameters must give that call's gradients, not stale ones.
    """
    m, n, k, L = 12, 9, 4, 3
    pat, rows, cols = _pattern(m, n, 40, seed=3)
    pat._kernels[(torch.float64, rows.device)] = PatternKernels(
        pat, torch.float64, method=method, chunk_elements=10
    )
    g = torch.Generator().manual_seed(2)
    y = torch.randn(rows.shape[0], dtype=torch.float64, generator=g)
    s = m * n / rows.shape[0]
    workspace = CompressedWorkspace(pat.kernels(torch.float64), k, L) if reuse else None
    for trial in range(2):
        U = torch.randn(m, k, dtype=torch.float64, generator=g, requires_grad=True)
        V = torch.randn(n, k, dtype=torch.float64, generator=g, requires_grad=True)
        cores = [
            (torch.eye(k, dtype=torch.float64) + 0.3 * torch.randn(k, k, generator=g))
            .double()
            .requires_grad_()
            for _ in range(L)
        ]
        X = U @ cores[2] @ cores[1] @ cores[0] @ V.T
        (0.5 * s * ((X[rows, cols] - y) ** 2).sum()).backward()
        with torch.no_grad():
            resid, gU, gV, gcores = compressed_residual_and_grads(
                pat, y, s, U.detach(), V.detach(), [c.detach() for c in cores],
                workspace=workspace,
            )  # fmt: skip
        exact = {"rtol": 1e-12, "atol": 0.0}
        torch.testing.assert_close(resid, (X[rows, cols] - y).detach(), **exact)
        torch.testing.assert_close(gU, U.grad, **exact)
        torch.testing.assert_close(gV, V.grad, **exact)
        for got, c in zip(gcores, cores, strict=True):
            torch.testing.assert_close(got, c.grad, **exact)
        if reuse and trial == 1:
            assert resid is workspace.resid
            buf = workspace.grad_V
            assert (gV.data_ptr(), gV.stride()) == (buf.data_ptr(), buf.stride())


@pytest.mark.parametrize("reuse", [False, True])
@pytest.mark.parametrize("L", [1, 2, 4, 5])
def test_compressed_grads_of_any_depth(L, reuse):
    """Every depth back-propagates right (its transposed buffers alternate), call after call.

    The caller may edit the returned list of core gradients (the sharded network puts
    its all-reduced views there): the next call must still return fresh gradients.
    """
    m, n, k = 11, 8, 3
    pat, rows, cols = _pattern(m, n, 35, seed=5)
    g = torch.Generator().manual_seed(4)
    y = torch.randn(rows.shape[0], dtype=torch.float64, generator=g)
    s = m * n / rows.shape[0]
    eye = torch.eye(k, dtype=torch.float64)
    workspace = CompressedWorkspace(pat.kernels(torch.float64), k, L) if reuse else None
    for _ in range(3):
        U = torch.randn(m, k, dtype=torch.float64, generator=g, requires_grad=True)
        V = torch.randn(n, k, dtype=torch.float64, generator=g, requires_grad=True)
        cores = [
            (eye + 0.3 * torch.randn(k, k, dtype=torch.float64, generator=g)).requires_grad_()
            for _ in range(L)
        ]
        C = eye
        for W in cores:
            C = W @ C
        X = U @ C @ V.T
        (0.5 * s * ((X[rows, cols] - y) ** 2).sum()).backward()
        # grad mode on, inputs that require grad: computed without a graph, no out= error
        resid, gU, gV, gcores = compressed_residual_and_grads(
            pat, y, s, U, V, cores, workspace=workspace
        )
        assert not gU.requires_grad and not gcores[0].requires_grad
        exact = {"rtol": 1e-12, "atol": 1e-14}
        torch.testing.assert_close(resid, (X[rows, cols] - y).detach(), **exact)
        torch.testing.assert_close(gU, U.grad, **exact)
        torch.testing.assert_close(gV, V.grad, **exact)
        assert len(gcores) == L
        for got, c in zip(gcores, cores, strict=True):
            torch.testing.assert_close(got, c.grad, **exact)
        gcores[0] = torch.zeros(k, k, dtype=torch.float64)  # edited by the caller


@pytest.mark.parametrize("method", ["small", "dense", "sddmm", "gather"])
def test_compressed_loss_and_grads_match_autograd(method):
    m, n, k, L = 12, 9, 4, 3
    pat, rows, cols = _pattern(m, n, 40, seed=3)
    pat._kernels[(torch.float64, rows.device)] = PatternKernels(
        pat, torch.float64, method=method, chunk_elements=10
    )
    g = torch.Generator().manual_seed(2)
    U = torch.randn(m, k, dtype=torch.float64, generator=g, requires_grad=True)
    V = torch.randn(n, k, dtype=torch.float64, generator=g, requires_grad=True)
    cores = [
        (
            torch.eye(k, dtype=torch.float64)
            + 0.1 * torch.randn(k, k, generator=g, dtype=torch.float64)
        ).requires_grad_()
        for _ in range(L)
    ]
    y = torch.randn(rows.shape[0], dtype=torch.float64, generator=g)
    s = m * n / rows.shape[0]
    C = cores[2] @ cores[1] @ cores[0]
    X = U @ C @ V.T
    ref = 0.5 * s * ((X[rows, cols] - y) ** 2).sum()
    ref.backward()
    with torch.no_grad():
        loss, diff, gU, gV, gcores = compressed_loss_and_grads(
            pat, y, s, U.detach(), V.detach(), [c.detach() for c in cores]
        )
    torch.testing.assert_close(loss, ref.detach())
    torch.testing.assert_close(diff, (X[rows, cols] - y).detach())
    torch.testing.assert_close(gU, U.grad)
    torch.testing.assert_close(gV, V.grad)
    for got, c in zip(gcores, cores):
        torch.testing.assert_close(got, c.grad)


@pytest.mark.parametrize("wd", [0.0, 0.3])
def test_gradient_descent_is_sgd_bit_for_bit(wd):
    g = torch.Generator().manual_seed(0)
    ours = [torch.randn(5, 3, generator=g, dtype=torch.float64) for _ in range(3)]
    theirs = [p.clone() for p in ours]

    def groups(ps):
        return [{"params": ps[:2], "lr": 0.07}, {"params": ps[2:], "lr": 0.011}]

    given = [p.clone() for p in ours]  # gradients passed to step(), not set as .grad
    gd = GradientDescent(groups(ours), weight_decay=wd)
    gd_given = GradientDescent(groups(given), weight_decay=wd)
    sgd = torch.optim.SGD(groups(theirs), lr=1.0, momentum=0.0, weight_decay=wd)
    for _ in range(5):
        grads = [torch.randn(5, 3, generator=g, dtype=torch.float64) for _ in range(3)]
        for p, q, gr in zip(ours, theirs, grads):
            p.grad, q.grad = gr.clone(), gr.clone()
        gd.step()
        sgd.step()
        gd_given.step([grads[:2], grads[2:]])
    for p, q, r in zip(ours, theirs, given):
        assert torch.equal(p, q) and torch.equal(r, q)
    assert all(r.grad is None for r in given)
    with pytest.raises(ValueError, match="grads: expected 2 tensors"):
        gd_given.step([grads[:1], grads[2:]])
    gd.zero_grad()
    assert all(p.grad is None for p in ours)


def test_gradient_descent_moves_leaves_that_require_grad():
    """Parameters that require grad are updated in place under grad mode, without a graph."""
    W = torch.ones(2, requires_grad=True)
    W.grad = torch.full((2,), 0.5)
    GradientDescent([{"params": [W], "lr": 0.1}]).step()
    torch.testing.assert_close(W.detach(), torch.full((2,), 0.95))
    assert W.grad_fn is None and W.is_leaf


def test_transpose_is_built_only_for_gradients():
    """A pattern that only predicts (an evaluation set) never sorts its entries by column."""
    pat, *_ = _pattern(30, 20, 150)
    kern = PatternKernels(pat, torch.float64, method="dense")
    A, B = torch.randn(30, 2, dtype=torch.float64), torch.randn(20, 2, dtype=torch.float64)
    kern.sampled(A, B)
    assert kern._transposed is None
    kern.matmul_pair(torch.ones(150, dtype=torch.float64), A, B)
    assert kern._transposed is not None


@pytest.mark.parametrize("chunk", [None, 1, 7, 40])
def test_transposed_blocks_cover_omega_column_major(chunk):
    """Each block's permutation sorts its observations by column; blocks tile Ω."""
    m, n, N = 40, 30, 200
    pat, rows, cols = _pattern(m, n, N)
    kern = PatternKernels(pat, torch.float64, chunk_elements=chunk)
    blocks = kern.transposed_blocks()
    assert blocks[0][2] == 0 and blocks[-1][3] == N
    assert all(a[3] == b[2] and a[1] == b[0] for a, b in itertools.pairwise(blocks))
    if chunk is None:
        assert len(blocks) == 1
    for r0, r1, e0, e1, crow_t, col_t, perm in blocks:
        assert chunk is None or r1 - r0 == 1 or e1 - e0 <= chunk
        r, c = rows[e0:e1][perm], cols[e0:e1][perm]
        key = c * m + r
        assert torch.all(key[1:] > key[:-1])  # column-major, each observation once
        assert torch.equal(col_t.long(), r - r0)
        assert torch.equal(crow_t.long(), torch._convert_indices_from_coo_to_csr(c, n))


def test_pattern_from_strided_indices_matches_contiguous():
    """Index views with strides (one column of an (N, 2) array) give the same products."""
    rng = np.random.default_rng(0)
    m, n, k = 40, 30, 3
    mask = rng.random((m, n)) < 0.3
    both = np.stack(np.nonzero(mask), axis=1)  # (N, 2): each column is a strided view
    rows, cols = torch.from_numpy(both)[:, 0], torch.from_numpy(both)[:, 1]
    assert not rows.is_contiguous()
    A = torch.randn(m, k, dtype=torch.float64)
    B = torch.randn(n, k, dtype=torch.float64)
    strided = ObservedPattern.from_coo(rows, cols, (m, n)).kernels(torch.float64)
    expected = (A @ B.T)[rows, cols]
    torch.testing.assert_close(strided.sampled(A, B), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_row_weighted_decay_is_the_gradient_of_the_weighted_penalty(alpha):
    """Network excess + the optimizer's uniform ``λW`` = autograd of the weighted penalty.

    ``ℓ + (λ/2)(Σ_u w_u‖U_u‖² + Σ_l ‖W̃_l‖² + Σ_i w_i‖V_i‖²)`` with
    ``w = (count · dim / N)^α``; rows and columns without observations weigh 0 (α > 0).
    """
    from deepmc._data import prepare
    from deepmc._validation import Observations
    from deepmc.models._compressed_net import CompressedNetwork
    from deepmc.models._compressed_step import decay_weights

    m, n, k, L, lam = 12, 9, 4, 3, 0.07
    _, rows, cols = _pattern(m, n, 40, seed=3, empty_rows=True)
    g = torch.Generator().manual_seed(2)
    y = torch.randn(rows.shape[0], dtype=torch.float64, generator=g)
    obs = Observations(rows.numpy(), cols.numpy(), y.numpy(), (m, n))
    data = prepare(obs, torch.device("cpu"), torch.float64, scale=1.0)
    net = CompressedNetwork(k // 2, L, "random", 0.1, 1.0, weight_decay=lam,
                            decay_weighting=alpha)  # fmt: skip
    U = torch.randn(m, k, dtype=torch.float64, generator=g, requires_grad=True)
    V = torch.randn(n, k, dtype=torch.float64, generator=g, requires_grad=True)
    cores = [torch.randn(k, k, dtype=torch.float64, generator=g).requires_grad_() for _ in range(L)]
    X = U @ cores[2] @ cores[1] @ cores[0] @ V.T
    s = data.sampling_scale
    wu = (torch.bincount(rows, minlength=m).double() * m / rows.shape[0]) ** alpha
    wv = (torch.bincount(cols, minlength=n).double() * n / rows.shape[0]) ** alpha
    penalty = (wu[:, None] * U**2).sum() + (wv[:, None] * V**2).sum()
    penalty = penalty + sum((c**2).sum() for c in cores)
    (0.5 * s * ((X[rows, cols] - y) ** 2).sum() + 0.5 * lam * penalty).backward()
    params = {"cores": [c.detach() for c in cores], "factors": [U.detach(), V.detach()]}
    with torch.no_grad():
        _, grads = net.residual_and_grads(data, params)
        uniform = {
            "cores": [gc + lam * c for gc, c in zip(grads["cores"], params["cores"])],
            "factors": [gf + lam * f for gf, f in zip(grads["factors"], params["factors"])],
        }
    exact = {"rtol": 1e-12, "atol": 1e-12}
    torch.testing.assert_close(uniform["factors"][0], U.grad, **exact)
    torch.testing.assert_close(uniform["factors"][1], V.grad, **exact)
    for got, c in zip(uniform["cores"], cores, strict=True):
        torch.testing.assert_close(got, c.grad, **exact)
    row_w, col_w = decay_weights(data.pattern, alpha)
    torch.testing.assert_close(row_w, wu, **exact)
    torch.testing.assert_close(col_w, wv, **exact)
    if alpha > 0:
        assert row_w[0] == 0 and row_w[m - 1] == 0  # empty rows are not decayed


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_row_weighted_decay_without_weight_decay_is_plain_gd():
    """``decay_weighting`` changes nothing when ``weight_decay=0``: plain GD, bit for bit."""
    from deepmc import CompressedDeepMatrixCompletion

    rng = np.random.default_rng(0)
    X = rng.standard_normal((20, 3)) @ rng.standard_normal((3, 15))
    X[rng.random(X.shape) < 0.5] = np.nan
    kw = {"rank": 3, "solver": "gd", "max_iter": 60, "random_state": 0, "dtype": "float64"}
    plain = CompressedDeepMatrixCompletion(**kw).fit(X)
    weighted = CompressedDeepMatrixCompletion(decay_weighting=1.0, **kw).fit(X)
    np.testing.assert_array_equal(plain.U_, weighted.U_)
    for a, b in zip(plain.cores_, weighted.cores_, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_row_weighted_decay_shrinks_frequent_rows_more_than_uniform_decay():
    """α = 1 shrinks a row seen often more, and a row seen rarely less, than α = 0.

    Uniform decay costs a row with few observations the same as one with many, i.e.
    much more per observation; the weighted decay costs every observation alike.
    """
    from deepmc import CompressedDeepMatrixCompletion

    rng = np.random.default_rng(1)
    m, n = 40, 30
    Y = rng.standard_normal((m, 2)) @ rng.standard_normal((2, n))
    keep = rng.random((m, n)) < np.linspace(0.1, 0.9, m)[:, None]  # row u: ~(0.1..0.9)·n
    X = np.where(keep, Y, np.nan)
    kw = {"rank": 2, "solver": "gd", "max_iter": 400, "weight_decay": 0.05, "init_scale": 0.3}
    kw["random_state"] = 0
    norms = {}
    for alpha in (0.0, 1.0):
        # the fit's own completion (transform would fold the rows in again)
        completed = CompressedDeepMatrixCompletion(decay_weighting=alpha, **kw).fit_transform(X)
        norms[alpha] = np.linalg.norm(completed, axis=1)
    ratio = norms[1.0] / norms[0.0]
    rare, frequent = slice(0, 8), slice(m - 8, m)  # 0.1-0.26 and 0.74-0.9 of the row seen
    assert np.median(ratio[rare]) > 1.05
    assert np.median(ratio[frequent]) < 0.998


def test_joint_biases_step_is_the_penalised_gradient_preconditioned():
    """With biases: residual ``X_Ω + a + b − y``; factor gradients from autograd of the
    loss; bias steps ``(Σ_row r + λ_b a) / (n + λ_b)``, i.e. autograd of
    ``(s/2)‖r‖² + (s λ_b/2)(‖a‖² + ‖b‖²)`` divided by ``s (n + λ_b)``."""
    from deepmc._data import prepare
    from deepmc._validation import Observations
    from deepmc.models._compressed_net import CompressedNetwork

    m, n, k, L, reg = 12, 9, 4, 3, 2.5
    _, rows, cols = _pattern(m, n, 40, seed=4, empty_rows=True)
    g = torch.Generator().manual_seed(5)
    y = torch.randn(rows.shape[0], dtype=torch.float64, generator=g)
    obs = Observations(rows.numpy(), cols.numpy(), y.numpy(), (m, n))
    data = prepare(obs, torch.device("cpu"), torch.float64, scale=1.0)
    net = CompressedNetwork(k // 2, L, "random", 0.1, 1.0, bias_reg=reg, bias_lr_ratio=3.0)
    assert net.lr_ratios["biases"] == 3.0
    U = torch.randn(m, k, dtype=torch.float64, generator=g, requires_grad=True)
    V = torch.randn(n, k, dtype=torch.float64, generator=g, requires_grad=True)
    a = torch.randn(m, 1, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(n, 1, dtype=torch.float64, generator=g, requires_grad=True)
    cores = [torch.randn(k, k, dtype=torch.float64, generator=g).requires_grad_() for _ in range(L)]
    X = U @ cores[2] @ cores[1] @ cores[0] @ V.T + a + b.T
    s = data.sampling_scale
    r = X[rows, cols] - y
    (0.5 * s * (r**2).sum() + 0.5 * s * reg * ((a**2).sum() + (b**2).sum())).backward()
    params = {"cores": [c.detach() for c in cores], "factors": [U.detach(), V.detach()]}
    params["biases"] = [a.detach(), b.detach()]
    with torch.no_grad():
        resid, grads = net.residual_and_grads(data, params)
        left, right = net.factors(params)
    exact = {"rtol": 1e-12, "atol": 1e-12}
    torch.testing.assert_close(resid, r.detach(), **exact)
    torch.testing.assert_close(left @ right.T, X.detach(), **exact)
    torch.testing.assert_close(grads["factors"][0], U.grad, **exact)
    torch.testing.assert_close(grads["factors"][1], V.grad, **exact)
    n_u = torch.bincount(rows, minlength=m).double()[:, None]
    n_i = torch.bincount(cols, minlength=n).double()[:, None]
    torch.testing.assert_close(grads["biases"][0], a.grad / (s * (n_u + reg)), **exact)
    torch.testing.assert_close(grads["biases"][1], b.grad / (s * (n_i + reg)), **exact)
    # λ_b = 0: empty rows (0, m // 2, m - 1) take a zero step, not 0/0
    unregularised = CompressedNetwork(k // 2, L, "random", 0.1, 1.0, bias_reg=0.0)
    with torch.no_grad():
        _, grads = unregularised.residual_and_grads(data, params)
    assert torch.isfinite(grads["biases"][0]).all()
    assert grads["biases"][0][[0, m // 2, m - 1]].abs().max() == 0


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_joint_biases_fit_offsets_the_low_rank_part_cannot():
    """A rank-1 matrix plus row and column offsets: a rank-1 network fits it far better
    with biases than without, and its predictions include them."""
    from deepmc import CompressedDeepMatrixCompletion

    rng = np.random.default_rng(2)
    m, n = 30, 25
    Y = np.outer(rng.standard_normal(m), rng.standard_normal(n))
    Y += 2 * rng.standard_normal((m, 1)) + 2 * rng.standard_normal((1, n))
    X = np.where(rng.random(Y.shape) < 0.7, Y, np.nan)
    kw = {"rank": 1, "solver": "gd", "max_iter": 500, "random_state": 0, "dtype": "float64"}
    plain = CompressedDeepMatrixCompletion(**kw).fit(X)
    joint = CompressedDeepMatrixCompletion(bias_reg=0.0, **kw).fit(X)
    assert joint.history_["residual"].iloc[-1] < 0.5 * plain.history_["residual"].iloc[-1]
    assert joint.row_bias_.shape == (m,) and joint.col_bias_.shape == (n,)
    rows, cols = np.nonzero(~np.isnan(X))
    fitted = joint.predict_entries(rows, cols)  # the training residual, biases included
    err = np.linalg.norm(fitted - Y[rows, cols]) / np.linalg.norm(Y[rows, cols])
    assert err == pytest.approx(joint.history_["residual"].iloc[-1], rel=1e-6)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_joint_biases_survive_a_warm_start():
    """The biases are stored and restored: a warm start continues from them."""
    from deepmc import CompressedDeepMatrixCompletion

    rng = np.random.default_rng(3)
    Y = np.outer(rng.standard_normal(20), rng.standard_normal(15)) + rng.standard_normal((20, 1))
    X = np.where(rng.random(Y.shape) < 0.7, Y, np.nan)
    kw = {"rank": 1, "solver": "gd", "max_iter": 50, "bias_reg": 1.0, "random_state": 0}
    est = CompressedDeepMatrixCompletion(warm_start=True, **kw).fit(X)
    first = est.row_bias_.copy()
    est.fit(X)
    assert est.n_iter_ == 100
    longer = CompressedDeepMatrixCompletion(**{**kw, "max_iter": 100}).fit(X)
    np.testing.assert_allclose(est.row_bias_, longer.row_bias_, rtol=1e-5, atol=1e-7)
    assert not np.allclose(first, est.row_bias_)


@pytest.mark.parametrize("param", [{"bias_reg": 1.0}, {"decay_weighting": 1.0}])
def test_distributed_fit_refuses_whole_matrix_options(param):
    from deepmc import CompressedDeepMatrixCompletion
    from deepmc.distributed._fit import _check_supported

    with pytest.raises(ValueError, match=next(iter(param))):
        _check_supported(CompressedDeepMatrixCompletion(**param))


def test_a_pattern_and_its_kernels_are_freed_without_the_garbage_collector():
    # a cycle between them would keep a fit's structures and buffers until a collection
    import gc
    import weakref

    rows, cols = torch.tensor([0, 0, 1, 2]), torch.tensor([1, 2, 0, 1])
    pattern = ObservedPattern.from_coo(rows, cols, (3, 3))
    kernels = pattern.kernels(torch.float32)
    kernels.buffer("residual", (4,))
    assert kernels.pattern.shape == (3, 3) and kernels.pattern.col is pattern.col
    freed = weakref.ref(kernels)
    gc.disable()
    try:
        del pattern, kernels
        assert freed() is None
    finally:
        gc.enable()
