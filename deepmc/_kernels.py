"""Tensor kernels: sampled dense-dense products and sparse gradients on an observed set.

The compressed model never forms an ``m × n`` matrix: predictions on Ω are sampled
products ``(A Bᵀ)_Ω`` (dense row blocks picked by index, or
:func:`torch.sparse.sampled_addmm`), and gradients are CSR × dense products
(:class:`PatternKernels`). The products of chains of layers are in :mod:`deepmc._chain`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch

from ._chain import chain_backward, chain_prefixes, chain_product

__all__ = [
    "ObservedPattern",
    "PatternKernels",
    "chain_backward",
    "chain_prefixes",
    "chain_product",
]


#: Whether this process has built a CSR tensor yet: torch warns that CSR support is in
#: beta once per process, on the first one, so only that one is built under a filter.
_CSR_BUILT = False


def _csr(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, shape) -> torch.Tensor:
    """A CSR tensor over existing index tensors (no copy, no invariant check).

    torch's "CSR support is in beta" warning is silenced; it is issued once per process,
    so only the first call pays for a ``warnings.catch_warnings`` block (which would
    otherwise cost every step on every sparse path).
    """
    global _CSR_BUILT
    if _CSR_BUILT:
        return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        out = torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)
    _CSR_BUILT = True
    return out


@dataclass(frozen=True)
class ObservedPattern:
    """CSR structure of the observed set Ω.

    Observations are stored sorted by (row, column), so the ``k``-th observation is the
    ``k``-th stored value of the CSR matrix. The products on Ω are in :meth:`kernels`.

    Parameters
    ----------
    crow, col : Tensor
        CSR row pointers (m + 1,) and column indices (N,) of Ω (int64).
    shape : tuple of (int, int)
    """

    crow: torch.Tensor
    col: torch.Tensor
    shape: tuple[int, int]
    _kernels: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @classmethod
    def from_coo(
        cls, rows: torch.Tensor, cols: torch.Tensor, shape: tuple[int, int]
    ) -> ObservedPattern:
        """Build from row-major-sorted coordinates ``rows``, ``cols`` (int64).

        Views with strides (e.g. columns of an ``np.nonzero`` pair stacked as one array)
        are copied to contiguous memory first: the CSR kernels read the raw buffers.
        """
        rows, cols = rows.contiguous(), cols.contiguous()
        return cls(torch._convert_indices_from_coo_to_csr(rows, shape[0]), cols, shape)

    @property
    def n_observed(self) -> int:
        return int(self.col.shape[0])

    def kernels(self, dtype: torch.dtype) -> PatternKernels:
        """The :class:`PatternKernels` of this pattern for ``dtype`` (built once, cached)."""
        key = (dtype, self.col.device)
        if key not in self._kernels:
            self._kernels[key] = PatternKernels(self, dtype)
        return self._kernels[key]


#: Observed fraction N/(m·n) from which :class:`PatternKernels` computes the sampled
#: product as dense row blocks of ``A Bᵀ`` (BLAS) and picks Ω out of them: a sampled
#: entry of ``sampled_addmm`` costs about ten dense entries, so the dense form wins above
#: ≈ 7 % observed (the performance notes).
DENSE_DENSITY = 0.1
#: Largest ``m·n`` for which :class:`PatternKernels` works on a dense ``m × n`` residual
#: (method ``"small"``): the three products are then plain BLAS calls, which beat the
#: CSR kernels while the matrix is a few times 10⁴ entries (compressed gradients,
#: ``"small"`` against ``"dense"``: even at 200 × 200; the performance notes).
SMALL_ELEMENTS = 1 << 14
#: Elements of the temporaries of one chunk (a dense block, or gathered rows); the extra
#: memory of a product is O(min(N·k, CHUNK_ELEMENTS)) whatever N.
CHUNK_ELEMENTS = 1 << 22
#: Observations per block of ``sampled_addmm`` and of the transposed product, on the
#: CPU. Blocks of this size keep each block's temporaries (the result structure
#: ``sampled_addmm`` allocates, a block's permuted values) small enough to be recycled by
#: the allocator rather than mapped afresh, page fault by page fault, on every call
#: (problem C, ``CompressedStep`` of ``bench_scale.py``). On CUDA, whose caching
#: allocator recycles blocks of any size and where every block costs kernel launches,
#: blocks hold :data:`CHUNK_ELEMENTS` observations.
BLOCK_OBSERVATIONS = 1 << 18


def _row_blocks(crow: list[int], max_rows: int | None, max_entries: int | None) -> list:
    """Split rows ``0..m`` into ``(r0, r1, e0, e1)`` blocks bounded in rows or entries."""
    m = len(crow) - 1
    blocks = []
    r0 = 0
    while r0 < m:
        if max_rows is not None:
            r1 = min(m, r0 + max_rows)
        else:
            r1 = r0 + 1
            while r1 < m and crow[r1 + 1] - crow[r0] <= max_entries:
                r1 += 1
        blocks.append((r0, r1, crow[r0], crow[r1]))
        r0 = r1
    return blocks


class PatternKernels:
    """The products of the compressed model on a fixed Ω, with their index structures built once.

    A training loop calls them thousands of times on the same Ω, so this class keeps
    the int32 CSR structures of ``R`` and of the transposed blocks (wrapping a new value
    vector in them costs a couple of microseconds and copies nothing), and chooses the
    sampled-product kernel once:

    * ``"small"`` (when ``m·n`` ≤ :data:`SMALL_ELEMENTS`): everything dense — ``A Bᵀ``
      in one BLAS call with Ω picked out by ``index_select``, and ``R`` scattered into a
      dense ``m × n`` buffer (zero off Ω) for two BLAS products ``R B`` and ``Rᵀ A``,
      written column-major (:attr:`column_major`); :meth:`residual_pair`, the
      training step's form, makes ``R`` in one dense ``addcmul`` instead;
    * ``"dense"`` (when at least :data:`DENSE_DENSITY` of the entries are observed):
      ``A Bᵀ`` by row blocks (one BLAS product each) of at most
      :data:`BLOCK_OBSERVATIONS` entries on the CPU — blocks that stay in cache while
      Ω is picked out of them with ``index_select`` (problem B: faster than one
      10⁶-entry block) — and :data:`CHUNK_ELEMENTS` on CUDA;
    * ``"sddmm"``: :func:`torch.sparse.sampled_addmm` by row blocks of at most
      :data:`BLOCK_OBSERVATIONS` observations;
    * ``"gather"``: row-wise dot products of gathered rows, chunked so that the
      gathered ``chunk × k`` temporaries stay within :data:`CHUNK_ELEMENTS`.

    ``Rᵀ A`` needs the residual in column-major order. It is computed as
    ``Σ_b R_bᵀ A_b`` over row blocks ``R_b`` of at most :data:`BLOCK_OBSERVATIONS`
    observations, each with its own column-major permutation: the permuting gather then
    stays inside one block's values (a cache-sized slice) instead of jumping across all
    N of them (problem C: the global gather dominated the pair ``R V``, ``Rᵀ A``).
    The transposed structures are built on the first gradient, so a pattern used only
    for predictions (an evaluation set) never sorts its entries by column.

    The extra memory is O(N + CHUNK_ELEMENTS) whatever the method, so the compressed
    model stays O(N + (m+n)·r̂). Results are new tensors — they never alias each other,
    the arguments, or anything kept here (the private buffers are only read through
    ``index_select`` and products) — unless the caller passes ``out=`` buffers, for
    instance the persistent ones of :meth:`buffer`: a training step then allocates
    nothing of size N or m·k (fresh large temporaries cost page faults on the CPU).

    Parameters
    ----------
    pattern : ObservedPattern
    dtype : torch.dtype
    method : {"auto", "small", "dense", "sddmm", "gather"}, default="auto"
    chunk_elements : int, default=None
        Overrides :data:`CHUNK_ELEMENTS`, and bounds the observation blocks too (tests
        use tiny chunks).

    Attributes
    ----------
    column_major : bool
        Whether the ``m × k`` and ``n × k`` operands and results of this method are
        best stored column-major, as transposed views of ``k × m`` and ``k × n``
        tensors (:meth:`tall`): true for ``"small"``. A BLAS product of thin
        matrices runs faster when its result's contiguous rows are long (``R B`` for
        problem A's 100 × 100 ``R``; the performance notes), and torch hands either
        layout to BLAS without a copy.
        The CSR kernels of the other methods write row-major results.

    Examples
    --------
    >>> import torch
    >>> rows, cols = torch.tensor([0, 0, 2]), torch.tensor([1, 2, 0])
    >>> pat = ObservedPattern.from_coo(rows, cols, (3, 3))
    >>> A, B = torch.arange(6.0).view(3, 2), torch.ones(3, 2)
    >>> pat.kernels(torch.float32).sampled(A, B)
    tensor([1., 1., 9.])
    """

    def __init__(
        self,
        pattern: ObservedPattern,
        dtype: torch.dtype,
        *,
        method: str = "auto",
        chunk_elements: int | None = None,
    ) -> None:
        m, n = pattern.shape
        N = pattern.n_observed
        device = pattern.col.device
        budget = int(chunk_elements or CHUNK_ELEMENTS)
        if method == "auto":
            if m * n <= SMALL_ELEMENTS:
                method = "small"
            else:
                method = "dense" if N >= DENSE_DENSITY * m * n else "sddmm"
        if method not in ("small", "dense", "sddmm", "gather"):
            raise ValueError(
                "method: expected 'auto', 'small', 'dense', 'sddmm' or 'gather', got "
                f"{method!r}."
            )
        # A twin without the kernels cache, sharing the index tensors: ``pattern`` caches
        # this object, and a reference back to it would make a cycle that keeps every
        # structure and buffer here alive until a garbage collection.
        self.pattern = ObservedPattern(pattern.crow, pattern.col, pattern.shape)
        self.dtype = dtype
        self.method = method
        self.column_major = method == "small"
        self.budget = budget
        self.block = min(budget, BLOCK_OBSERVATIONS if device.type == "cpu" else CHUNK_ELEMENTS)
        self._crow_host = pattern.crow.tolist()
        rows = torch.repeat_interleave(
            torch.arange(m, device=device), pattern.crow[1:] - pattern.crow[:-1]
        )
        self.rows = rows
        # int32 indices spare the CSR × dense kernel an index conversion on every call, and
        # halve the index traffic of the gathers (problem B's column-major permutation
        # and pick of Ω)
        self._index_dtype = torch.int32 if max(N, m, n) < 2**31 - 1 else torch.int64
        self._blocks: list = []
        self._buffers: dict = {}
        self._values_t: torch.Tensor | None = None
        if method == "small":
            self._linear = rows * n + pattern.col  # int64: the index of ``scatter_``
            self._linear_ix = self._linear.to(torch.int32 if m * n < 2**31 - 1 else torch.int64)
            self._dense = torch.empty(m * n, dtype=dtype, device=device)
            self._residual = torch.zeros(m, n, dtype=dtype, device=device)  # zero off Ω
            # views made once, not per step
            self._dense_2d = self._dense.view(m, n)
            self._dense_t = self._dense_2d.t()
            self._residual_flat = self._residual.view(-1)
            self._residual_t = self._residual.t()
            # 1 on Ω, 0 elsewhere; −y on Ω for the last ``y`` seen (:meth:`residual_pair`)
            self._mask = torch.zeros(m * n, dtype=dtype, device=device)
            self._mask.index_fill_(0, self._linear, 1.0)
            self._mask = self._mask.view(m, n)
            self._neg_targets = torch.zeros(m * n, dtype=dtype, device=device)
            self._neg_targets_2d = self._neg_targets.view(m, n)
            self._targets_seen: tuple[torch.Tensor, int] | None = None
        elif method == "dense":
            rows_per_block = max(1, self.block // max(n, 1))
            for r0, r1, e0, e1 in _row_blocks(self._crow_host, rows_per_block, None):
                local = (rows[e0:e1] - r0) * n + pattern.col[e0:e1]
                local = local.to(torch.int32 if (r1 - r0) * n < 2**31 - 1 else torch.int64)
                self._blocks.append((r0, r1, e0, e1, local))
            widest = max((r1 - r0 for r0, r1, *_ in self._blocks), default=0)
            self._dense = torch.empty(widest * n, dtype=dtype, device=device)
        elif method == "sddmm":
            for r0, r1, e0, e1 in _row_blocks(self._crow_host, None, max(self.block, 1)):
                ones = torch.ones(e1 - e0, dtype=dtype, device=device)
                crow = pattern.crow[r0 : r1 + 1] - e0
                mask = _csr(crow, pattern.col[e0:e1], ones, (r1 - r0, n))
                self._blocks.append((r0, r1, e0, e1, mask))
        self._crow = pattern.crow.to(self._index_dtype)
        self._col = pattern.col.to(self._index_dtype)
        self._transposed: list | None = None

    def sampled(
        self, A: torch.Tensor, B: torch.Tensor, *, out: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Entries of ``A @ B.T`` on Ω, in observation order, without forming ``A @ B.T``.

        Parameters
        ----------
        A : Tensor of shape (m, k)
        B : Tensor of shape (n, k)
        out : Tensor of shape (N,), default=None
            Written in place and returned, instead of a new tensor.

        Returns
        -------
        Tensor of shape (N,)
        """
        N = self.pattern.n_observed
        n = self.pattern.shape[1]
        Bt = B.t()
        if self.method == "small":
            torch.mm(A, Bt, out=self._dense_2d)
            return torch.index_select(self._dense, 0, self._linear_ix, out=out)
        if self.method == "dense" and len(self._blocks) == 1:  # no slicing of the output
            r0, r1, _e0, _e1, local = self._blocks[0]
            torch.mm(A[r0:r1], Bt, out=self._dense[: (r1 - r0) * n].view(r1 - r0, n))
            return torch.index_select(self._dense, 0, local, out=out)
        if out is None:
            out = torch.empty(N, dtype=A.dtype, device=A.device)
        if self.method == "dense":
            for r0, r1, e0, e1, local in self._blocks:
                block = self._dense[: (r1 - r0) * n].view(r1 - r0, n)
                torch.mm(A[r0:r1], Bt, out=block)
                torch.index_select(self._dense, 0, local, out=out[e0:e1])
        elif self.method == "sddmm":
            for r0, r1, e0, e1, mask in self._blocks:
                out[e0:e1] = torch.sparse.sampled_addmm(mask, A[r0:r1], Bt, beta=0.0).values()
        else:
            step = max(1, self.budget // max(A.shape[1], 1))
            rows, cols = self.rows, self.pattern.col
            for e0 in range(0, N, step):
                e1 = min(N, e0 + step)
                prod = A.index_select(0, rows[e0:e1]).mul_(B.index_select(0, cols[e0:e1]))
                torch.sum(prod, 1, out=out[e0:e1])
        return out

    def matmul_pair(
        self,
        values: torch.Tensor,
        A: torch.Tensor,
        B: torch.Tensor,
        *,
        alpha: float = 1.0,
        out: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(α R @ B, α Rᵀ @ A)`` for the sparse ``R`` with ``values`` on Ω.

        Parameters
        ----------
        values : Tensor of shape (N,)
        A : Tensor of shape (m, k)
        B : Tensor of shape (n, k)
        alpha : float, default=1.0
            α, applied inside the products (no extra pass over the results).
        out : tuple of (Tensor of shape (m, k), Tensor of shape (n, k)), default=None
            Written in place and returned, instead of new tensors (of the layout of
            :meth:`tall`). Any layout is correct; that of :meth:`tall` is the fastest.

        Returns
        -------
        RB : Tensor of shape (m, k)
        RtA : Tensor of shape (n, k)
        """
        m, n = self.pattern.shape
        k = A.shape[1]
        if out is None:
            out = (self.tall(m, B.shape[1]), self.tall(n, k))
        RB, RtA = out
        if self.method == "small":
            R = self._residual
            self._residual_flat.scatter_(0, self._linear, values)
            torch.addmm(RB, R, B, beta=0, alpha=alpha, out=RB)
            torch.addmm(RtA, self._residual_t, A, beta=0, alpha=alpha, out=RtA)
            return RB, RtA
        torch.addmm(RB, _csr(self._crow, self._col, values, (m, n)), B, beta=0, alpha=alpha, out=RB)
        blocks = self.transposed_blocks()
        if self._values_t is None:
            self._values_t = torch.empty(self.pattern.n_observed, dtype=self.dtype, device=A.device)
        for b, (r0, r1, e0, e1, crow_t, col_t, perm) in enumerate(blocks):
            values_t = torch.index_select(values[e0:e1], 0, perm, out=self._values_t[e0:e1])
            Rt = _csr(crow_t, col_t, values_t, (n, r1 - r0))
            torch.addmm(RtA, Rt, A[r0:r1], beta=0 if b == 0 else 1, alpha=alpha, out=RtA)
        if not blocks:  # no observation at all
            RtA.zero_()
        return RB, RtA

    def tall(self, rows: int, cols: int, *, name: str | None = None) -> torch.Tensor:
        """A ``rows × cols`` tensor of this dtype and device, column-major if :attr:`column_major`.

        Parameters
        ----------
        rows, cols : int
        name : str, default=None
            Return the persistent :meth:`buffer` of this name (zeros at first) instead
            of a new, uninitialised tensor.

        Returns
        -------
        Tensor of shape (rows, cols)
            A transposed view of a contiguous ``cols × rows`` tensor if
            :attr:`column_major`, else contiguous.
        """
        shape = (cols, rows) if self.column_major else (rows, cols)
        if name is not None:
            out = self.buffer(name, shape)
        else:
            out = torch.empty(shape, dtype=self.dtype, device=self.pattern.col.device)
        return out.t() if self.column_major else out

    def residual_pair(
        self,
        A: torch.Tensor,
        B: torch.Tensor,
        y: torch.Tensor,
        *,
        alpha: float = 1.0,
        out: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The residual ``r = (A Bᵀ)_Ω − y`` and ``(α R B, α Rᵀ A)`` for ``R`` with ``r`` on Ω.

        :meth:`sampled`, a subtraction and :meth:`matmul_pair`, in fewer kernels for the
        ``"small"`` method: there ``R = M ⊙ (A Bᵀ) − Y`` is formed densely in one
        ``addcmul`` (``M`` the 0/1 mask of Ω, ``Y`` the dense ``y``) and ``r`` picked
        out of it, instead of picking ``(A Bᵀ)_Ω``, subtracting ``y`` and scattering
        the difference. ``Y`` is kept for the last ``y`` and rebuilt when another tensor
        is passed or ``y`` was modified in place (its ``_version`` counter). The results
        equal those of the separate calls exactly.

        Parameters
        ----------
        A : Tensor of shape (m, k)
        B : Tensor of shape (n, k)
        y : Tensor of shape (N,)
        alpha : float, default=1.0
        out : tuple of (Tensor of shape (N,), Tensor of shape (m, k), Tensor of shape (n, k)),
              default=None
            Written in place and returned, instead of new tensors.

        Returns
        -------
        residual : Tensor of shape (N,)
        RB : Tensor of shape (m, k)
        RtA : Tensor of shape (n, k)
        """
        if out is None:
            out = (None, None, None)
        resid, RB, RtA = out
        if self.method != "small":
            resid = self.sampled(A, B, out=resid).sub_(y)
            pair = None if RB is None or RtA is None else (RB, RtA)
            return (resid, *self.matmul_pair(resid, A, B, alpha=alpha, out=pair))
        if RB is None:
            RB = self.tall(A.shape[0], B.shape[1])
        if RtA is None:
            RtA = self.tall(B.shape[0], A.shape[1])
        seen = self._targets_seen
        if seen is None or seen[0] is not y or seen[1] != y._version:
            self._neg_targets.scatter_(0, self._linear, torch.neg(y))  # stays 0 off Ω
            self._targets_seen = (y, y._version)
        R = torch.mm(A, B.t(), out=self._dense_2d)
        torch.addcmul(self._neg_targets_2d, self._mask, R, out=R)
        resid = torch.index_select(self._dense, 0, self._linear_ix, out=resid)
        torch.addmm(RB, R, B, beta=0, alpha=alpha, out=RB)
        torch.addmm(RtA, self._dense_t, A, beta=0, alpha=alpha, out=RtA)
        return resid, RB, RtA

    def buffer(self, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        """A persistent tensor of this dtype and device, by ``name`` and ``shape`` (zeros at first).

        The same tensor is returned on every call with the same ``(name, shape)``: a
        training loop writes its per-step results there (``out=``) instead of
        allocating them anew. Its contents belong to the last writer.
        """
        key = (name, tuple(shape))
        if key not in self._buffers:
            device = self.pattern.col.device
            # zeros, not empty: no product ever meets stale NaNs, whatever its β=0 handling
            self._buffers[key] = torch.zeros(key[1], dtype=self.dtype, device=device)
        return self._buffers[key]

    def transposed_blocks(self) -> list:
        """``(r0, r1, e0, e1, crow_t, col_t, perm)`` per row block of ``Rᵀ`` (built once).

        Rows ``r0:r1`` hold observations ``e0:e1``; the block's transpose is the
        ``n × (r1 − r0)`` CSR matrix with pointers ``crow_t``, local row indices
        ``col_t`` and values ``values[e0:e1][perm]``.
        """
        if self._transposed is None:
            p = self.pattern
            n = p.shape[1]
            blocks = []
            for r0, r1, e0, e1 in _row_blocks(self._crow_host, None, max(self.block, 1)):
                local_rows = self.rows[e0:e1] - r0
                cols = p.col[e0:e1]
                perm = torch.argsort(cols * (r1 - r0) + local_rows)
                crow_t = torch._convert_indices_from_coo_to_csr(cols[perm], n)
                ix = self._index_dtype
                local_t = local_rows[perm].to(ix)
                blocks.append((r0, r1, e0, e1, crow_t.to(ix), local_t, perm.to(ix)))
            self._transposed = blocks
        return self._transposed
