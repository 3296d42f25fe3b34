"""deepmc._kernels and the plain GD optimizer against dense references, chunking edge cases."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from deepmc._kernels import ObservedPattern, PatternKernels
from deepmc._solver import GradientDescent
from deepmc.models._compressed import compressed_loss_and_grads, compressed_residual_and_grads


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


def test_buffer_is_persistent_per_name_and_shape():
    kern = PatternKernels(_pattern(6, 5, 10)[0], torch.float32)
    a = kern.buffer("x", (3, 2))
    assert kern.buffer("x", (3, 2)) is a and a.dtype == torch.float32
    assert kern.buffer("x", (2, 3)) is not a and kern.buffer("y", (3, 2)) is not a


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

    With ``reuse`` the results land in the pattern's buffers; a second call with other
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
                pat, y, s, U.detach(), V.detach(), [c.detach() for c in cores], reuse=reuse
            )
        exact = {"rtol": 1e-12, "atol": 0.0}
        torch.testing.assert_close(resid, (X[rows, cols] - y).detach(), **exact)
        torch.testing.assert_close(gU, U.grad, **exact)
        torch.testing.assert_close(gV, V.grad, **exact)
        for got, c in zip(gcores, cores, strict=True):
            torch.testing.assert_close(got, c.grad, **exact)
        if reuse and trial == 1:
            kern = pat.kernels(torch.float64)
            assert resid is kern.buffer("compressed.residual", (rows.shape[0],))
            assert gV is kern.buffer("compressed.grad_V", (n, k))


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
            pat, y, s, U, V, cores, reuse=reuse
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

    gd = GradientDescent(groups(ours), weight_decay=wd)
    sgd = torch.optim.SGD(groups(theirs), lr=1.0, momentum=0.0, weight_decay=wd)
    for _ in range(5):
        grads = [torch.randn(5, 3, generator=g, dtype=torch.float64) for _ in range(3)]
        for p, q, gr in zip(ours, theirs, grads):
            p.grad, q.grad = gr.clone(), gr.clone()
        gd.step()
        sgd.step()
    for p, q in zip(ours, theirs):
        assert torch.equal(p, q)
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
