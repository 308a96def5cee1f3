"""Sums of squares on the GPU in the fixed order of pyoptim.reference.sum_of_squares (csrc/sums.h).

The order: an array is cut into blocks of SUM_BLOCK elements; in a block, element i is added into
partial sum ("lane") i mod SUM_LANES, in order; the SUM_LANES lanes, then the blocks' sums, are
added pairwise (the sum of a list is the sum of its first half plus the sum of its second half,
the first half having len // 2 elements). All in float64. A GPU that adds in this order gets the
reference's and the C++ backend's sum to the bit, for any launch configuration, every run: the
global gradient norm of the optimizer classes' max_grad_norm, and LAMB's per-array norms.

Two kernels do it (Note [sums on the GPU]):

* ``block_sums_kernel(element, rows)``: one CUDA block per SUM_BLOCK block of an array (a grid-
  stride loop over the blocks). The threads run ``element`` on the block's elements a round of
  ROUND at a time, each writing the squares of its element (one per row: LAMB sums two, the param
  and the update direction) to shared memory; after a barrier, the thread that owns a lane adds
  the round's squares of that lane, in element order, to it. The block's lanes are then added
  pairwise and written to ``sums[row, first + block]``.
* ``tree_sums_kernel(rows, finish)``: one CUDA block adds each row of ``sums`` pairwise and hands
  the totals to ``finish`` (a ratio, a norm). The recursive halving is evaluated in parallel (see
  ``subtree_sum``).

Note [sums on the GPU]. A sum in a fixed order is a chain of dependent additions: 1024 per lane
and block, SUM_BLOCK / SUM_LANES. The elementwise work around it (loads, an optimizer's moments,
the squares) runs on all threads of the block; only the lane additions, from shared memory, are
serial, on SUM_LANES threads per row. The squares are products rounded on their own (``dmul_rn``,
never fused with the addition into an FMA), as the C++ build (-ffp-contract=off) computes them.

Float64 in float32 kernels: these sums are float64 by definition (the C++ backend accumulates in
double). A float32 kernel that sums (LAMB's first pass) widens the values it squares to float64,
multiplies, adds, moves and stores float64, and nothing else: no float64 value ever flows back into
float32 arithmetic. tests/test_cuda_ptx.py checks exactly that on its PTX.

Device functions here use no ``cuda.*`` API (see pyoptim/_cuda_rules.py on the simulator): thread
indices, barriers, shared and local arrays live in the kernels and are passed in. On the simulator,
shared arrays are allocated under a lock (``memory``).

Performance (not measured: no GPU was at hand). Pass 1 of LAMB does the elementwise work of an
Adam step plus, per 1024 elements, a barrier and 64 dependent shared-memory additions on one warp;
several blocks per SM keep the memory busy meanwhile. A scratch array of 16 bytes per 16384
elements and a one-block kernel hold the blocks' sums.
"""

from __future__ import annotations

import functools
import threading

import numpy as np
from numba import cuda

from . import _cuda_rules, reference
from ._cuda_rules import SIMULATOR, _math, device

SUM_BLOCK = reference.SUM_BLOCK  # elements per block (csrc/sums.h kSumBlock)
SUM_LANES = reference.SUM_LANES  # partial sums per block (kSumLanes)
ROUND = 1024  # elements whose squares a CUDA block stages in shared memory at a time
MAX_TREE_THREADS = 1024  # threads of a tree_sums_kernel block (CUDA's largest block)
STACK = 64  # levels of a pairwise tree: enough for 2**63 values

_dmul = _math(np.float64).mul
_float64 = np.float64


@device
def square(x):
    """x * x in float64, rounded on its own (never fused into an FMA with the sum)."""
    x = _float64(x)
    return _dmul(x, x)


def blocks_of(n: int) -> int:
    """The number of SUM_BLOCK blocks an array of n elements is cut into."""
    return -(-n // SUM_BLOCK)


# ---------------------------------------------------------------------------------------------
# One array's blocks: lanes


# A block's shared memory, per row: the squares of a round (columns 0 .. ROUND - 1), then the lanes
# (columns ROUND ..).
LANE = ROUND
SHARED_COLUMNS = ROUND + SUM_LANES


@device
def clear_lanes(shared, rows, tid, threads):
    for k in range(tid, rows * SUM_LANES, threads):
        shared[k // SUM_LANES, LANE + k % SUM_LANES] = 0.0


@device
def add_round(shared, rows, count, tid, threads):
    """Adds a round's squares (count of them per row) into the lanes: square j into lane
    j mod SUM_LANES, in order. A lane is always the same thread's."""
    for k in range(tid, rows * SUM_LANES, threads):
        row, lane = k // SUM_LANES, k % SUM_LANES
        total = shared[row, LANE + lane]
        for j in range(lane, count, SUM_LANES):
            total = total + shared[row, j]
        shared[row, LANE + lane] = total


@device
def lanes_total(shared, row):
    """The lanes of a row added pairwise (csrc/sums.h pairwise_sum_fixed; SUM_LANES is a power
    of two, so the halving tree is the complete one). Overwrites the lanes."""
    width = 1
    while width < SUM_LANES:
        for k in range(LANE, LANE + SUM_LANES, 2 * width):
            shared[row, k] = shared[row, k] + shared[row, k + width]
        width *= 2
    return shared[row, LANE]


def block_sums_kernel(element, rows: int):
    """A kernel ``(arrays, scalars, sums, first)`` that runs ``element(arrays, i, scalars,
    shared, j)`` on every element i of ``arrays[0]`` (element writes its squares to
    ``shared[row, j]``, row < rows) and writes the sum of the squares of row r over block b
    of the array to ``sums[r, first + b]``, in the fixed order. Any launch configuration."""

    def kernel(arrays, scalars, sums, first):
        shared = memory.shared.array((rows, SHARED_COLUMNS), np.float64)
        tid, threads = cuda.threadIdx.x, cuda.blockDim.x
        n = arrays[0].shape[0]
        for b in range(cuda.blockIdx.x, (n + SUM_BLOCK - 1) // SUM_BLOCK, cuda.gridDim.x):
            begin = b * SUM_BLOCK
            end = min(begin + SUM_BLOCK, n)
            clear_lanes(shared, rows, tid, threads)
            for start in range(begin, end, ROUND):
                count = min(ROUND, end - start)
                for j in range(tid, count, threads):
                    element(arrays, start + j, scalars, shared, j)
                cuda.syncthreads()
                add_round(shared, rows, count, tid, threads)
                cuda.syncthreads()
            if tid == 0:
                for row in range(rows):
                    sums[row, first + b] = lanes_total(shared, row)
            cuda.syncthreads()  # the lanes are read before the next block clears them

    return _cuda_rules.kernel(kernel)


# ---------------------------------------------------------------------------------------------
# The blocks' sums: the pairwise tree, in parallel


@device
def leaf(values, n, depth, k):
    """Leaf k of the halving tree over values[0:n] extended to depth `depth` (2**depth >= n):
    the tree's nodes split a range of length m into m // 2 and m - m // 2 elements, and a node of
    one element splits into an empty one and itself. Every leaf at that depth is an element
    (length 1) or empty (0.0). Adding the empty ones changes no sum (0.0 + x is x for the sums
    of squares here, +0.0 or more, inf or NaN), so this tree's value is pairwise_sum's."""
    start, length = 0, n
    for level in range(depth - 1, -1, -1):
        half = length // 2
        if (k >> level) & 1:
            start += half
            length -= half
        else:
            length = half
    return values[start] if length == 1 else 0.0


@device
def subtree_sum(values, n, depth, first, count, stack):
    """The sum of the complete binary tree over leaves first .. first + count - 1 (count a power
    of two, first a multiple of it) of the tree of ``leaf``: the leaves in order, each merged with
    the partial sums of the left subtrees it completes (a binary counter), left + right."""
    top = 0
    for j in range(count):
        x = leaf(values, n, depth, first + j)
        carry = j
        while carry & 1:
            top -= 1
            x = stack[top] + x
            carry >>= 1
        stack[top] = x
        top += 1
    return stack[0]


def tree_sums_kernel(rows: int, finish):
    """A kernel ``(sums, out)`` run on one block of 2**d threads (d >= 0): the pairwise sum of each
    row of ``sums`` (rows x blocks, float64), then ``finish(totals, out)`` on thread 0. Thread t
    sums the subtree of the halving tree at depth d, index t; the 2**d subtree sums are then added
    up the tree's top d levels in shared memory. The tree is the same for any d."""

    def kernel(sums, out):
        partial = memory.shared.array(MAX_TREE_THREADS, np.float64)
        stack = cuda.local.array(STACK, np.float64)
        totals = cuda.local.array(2, np.float64)
        tid, threads = cuda.threadIdx.x, cuda.blockDim.x
        n = sums.shape[1]
        top = 0  # log2(threads)
        while (1 << top) < threads:
            top += 1
        depth = top  # of the tree's leaves: 2**depth >= n, and a whole subtree per thread
        while (1 << depth) < n:
            depth += 1
        per_thread = 1 << (depth - top)
        for row in range(rows):
            partial[tid] = subtree_sum(sums[row], n, depth, tid * per_thread, per_thread, stack)
            cuda.syncthreads()
            width = 1
            while width < threads:
                if tid % (2 * width) == 0:
                    partial[tid] = partial[tid] + partial[tid + width]
                width *= 2
                cuda.syncthreads()
            totals[row] = partial[0]
            cuda.syncthreads()  # partial[0] is read before the next row overwrites it
        if tid == 0:
            finish(totals, out)

    return _cuda_rules.kernel(kernel)


def tree_threads(blocks: int, threads: int) -> int:
    """Threads for a tree_sums_kernel over `blocks` sums: a power of two, at most `threads` (the
    launch configuration's) and no more than the sums need."""
    t = 1
    while t * 2 <= min(threads, MAX_TREE_THREADS) and t < blocks:
        t *= 2
    return t


# ---------------------------------------------------------------------------------------------
# The global sum of squares (the optimizer classes' max_grad_norm and skip_nonfinite)


@device
def _store_total(totals, out):
    out[0] = totals[0]


@functools.cache
def total_kernel():
    """tree_sums_kernel for one row: out[0] = the total (float64)."""
    return tree_sums_kernel(1, _store_total)


@functools.cache
def squares_kernel(load):
    """block_sums_kernel of the squares of one array, loaded (widened) by `load`."""

    @device
    def element(arrays, i, scalars, shared, j):
        shared[0, j] = square(load(arrays[0][i]))

    return block_sums_kernel(element, 1)


class _LockedShared:
    """cuda.shared on the simulator, one allocation at a time: the simulator's allocation of a
    block's shared array is not thread-safe (two threads of a block can each make their own, each
    then summing alone), and it tells arrays apart by the line that asks for them, so each kernel
    here asks for one shared array."""

    _lock = threading.Lock()

    @classmethod
    def array(cls, shape, dtype):
        with cls._lock:
            return cuda.shared.array(shape, dtype)  # the simulator's ``cuda`` during a launch


class _SimulatorMemory:
    shared = _LockedShared


# what the kernels here allocate shared memory from: numba.cuda on a GPU
memory = _SimulatorMemory if SIMULATOR else cuda
