"""Network topologies: layer sizes plus a symmetric connection mask.

Shared by the float model, the fixed-point model and the RTL generator.
Neurons are numbered layer by layer (input first, output last).

Kinds:

* ``"layered"``  -- every pair of neurons in adjacent layers is connected.
* ``"skip"``     -- the layer-skipping topology of Algorithm 1 (section 3.3 of
  the layer-skipping EqProp paper): start from the layered network, connect
  every pair of neurons inside each hidden layer, then ``n`` times select a
  random pre-existing connection, add a connection between a random
  unconnected pair (no self connections, no input-input, no output-output)
  and remove the selected one.
* ``"skip-add"`` -- the same, without removing (the paper's "added rather than
  randomly replaced" variant).

The paper describes networks by ``p = 1 - ((N_o - 1) / N_o) ** n`` where
``N_o`` is the number of connections before rewiring; :func:`p_from_n` and
:func:`n_from_p` convert between the two.
"""

from __future__ import annotations

import math
import numbers
import os
import zipfile
from dataclasses import dataclass

import numpy as np

from .files import atomic_write

__all__ = [
    "TopologyError",
    "Topology",
    "layered",
    "layer_skipping",
    "p_from_n",
    "n_from_p",
    "from_spec",
    "KINDS",
    "check_dense_size",
    "MAX_DENSE_BYTES",
]

KINDS = ("layered", "skip", "skip-add")
_MODE_TO_KIND = {"replace": "skip", "add": "skip-add"}
_FORMAT_VERSION = 1
_BLOCK = 1 << 18  # random draws per block in the rewiring loop
# The connection mask is a dense N x N bool array (and the models hold N x N weight,
# rate and mask matrices of 4 to 8 bytes per entry): refuse a network whose mask
# alone exceeds this, before anything is allocated. 2^30 bytes: N <= 32768.
MAX_DENSE_BYTES = 1 << 30


class TopologyError(ValueError):
    """Invalid topology parameter or file; the message names the parameter."""


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def _is_int(x) -> bool:
    return isinstance(x, (numbers.Integral, np.integer)) and not isinstance(x, (bool, np.bool_))


def _check_sizes(sizes) -> tuple[int, ...]:
    """Validate layer sizes; also accepts a string such as ``"784-500-10"``."""
    if isinstance(sizes, str):
        parts = sizes.strip().split("-")
        try:
            sizes = [int(s) for s in parts]
        except ValueError:
            raise TopologyError(f"sizes: {sizes!r} is not a dash-separated list of integers") from None
    try:
        sizes = list(sizes)
    except TypeError:
        raise TopologyError(f"sizes: {sizes!r} is not a sequence of layer sizes") from None
    if len(sizes) < 2:
        raise TopologyError(f"sizes: need at least 2 layers (input and output), got {len(sizes)}")
    for k, s in enumerate(sizes):
        if not _is_int(s):
            raise TopologyError(f"sizes: layer {k} has non-integer size {s!r}")
        if s <= 0:
            raise TopologyError(f"sizes: layer {k} has size {s}")
    check_dense_size(sizes)
    return tuple(int(s) for s in sizes)


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


def check_dense_size(sizes) -> None:
    """TopologyError naming ``sizes`` when the dense N x N mask would exceed MAX_DENSE_BYTES."""
    n = sum(int(s) for s in sizes)
    if n * n > MAX_DENSE_BYTES:
        limit = math.isqrt(MAX_DENSE_BYTES)
        raise TopologyError(
            f"sizes: {n} neurons need a dense {n} x {n} connection mask of {_gib(n * n)} (and the network "
            f"several times that for its weight matrices); at most {limit} neurons ({_gib(MAX_DENSE_BYTES)} "
            "of mask) are supported")


def _offsets(sizes: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(int(x) for x in np.concatenate([[0], np.cumsum(sizes)]))


def _n_layered(sizes) -> int:
    return sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))


def _n_intralayer_hidden(sizes) -> int:
    return sum(s * (s - 1) // 2 for s in sizes[1:-1])


def _n_allowed_pairs(sizes) -> int:
    """Pairs that may ever be connected: all but self, input-input, output-output."""
    n = sum(sizes)
    a, b = sizes[0], sizes[-1]
    return n * (n - 1) // 2 - a * (a - 1) // 2 - b * (b - 1) // 2


def _layered_mask(sizes: tuple[int, ...]) -> np.ndarray:
    off = _offsets(sizes)
    mask = np.zeros((off[-1], off[-1]), dtype=bool)
    for k in range(len(sizes) - 1):
        mask[off[k]:off[k + 1], off[k + 1]:off[k + 2]] = True
        mask[off[k + 1]:off[k + 2], off[k]:off[k + 1]] = True
    return mask


def _allowed_mask(sizes: tuple[int, ...]) -> np.ndarray:
    off = _offsets(sizes)
    n = off[-1]
    allowed = ~np.eye(n, dtype=bool)
    allowed[off[0]:off[1], off[0]:off[1]] = False
    allowed[off[-2]:off[-1], off[-2]:off[-1]] = False
    return allowed


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


# --------------------------------------------------------------------------
# p <-> n
# --------------------------------------------------------------------------

def _check_n0(n0) -> int:
    if not _is_int(n0) or n0 < 1:
        raise TopologyError(f"n0: {n0!r} is not a positive integer connection count")
    return int(n0)


def p_from_n(n: int, n0: int) -> float:
    """``p = 1 - ((n0 - 1) / n0) ** n`` (paper, section 3.3)."""
    n0 = _check_n0(n0)
    if not _is_int(n) or n < 0:
        raise TopologyError(f"n_rewire: {n!r} is not a non-negative integer")
    if n == 0:
        return 0.0
    if n0 == 1:
        return 1.0
    return float(-math.expm1(int(n) * math.log1p(-1.0 / n0)))


def n_from_p(p: float, n0: int) -> int:
    """``n = round(log(1 - p) / log((n0 - 1) / n0))``, the inverse of :func:`p_from_n`."""
    p = _check_p(p)
    n0 = _check_n0(n0)
    if p == 0.0:
        return 0
    if n0 == 1:
        raise TopologyError(f"p: {p} cannot be reached with a single connection (N_o = 1)")
    return int(math.floor(math.log1p(-p) / math.log1p(-1.0 / n0) + 0.5))


def _check_p(p) -> float:
    if isinstance(p, (bool, np.bool_)) or not isinstance(p, (numbers.Real, np.floating, np.integer)):
        raise TopologyError(f"p: {p!r} is not a number")
    p = float(p)
    if not (0.0 <= p < 1.0):  # also rejects NaN
        raise TopologyError(f"p: {p} is outside [0, 1)")
    return p


# --------------------------------------------------------------------------
# Topology
# --------------------------------------------------------------------------

@dataclass(eq=False)
class Topology:
    """Layer sizes, symmetric bool connection mask (N x N) and how it was made."""

    sizes: tuple[int, ...]
    mask: np.ndarray
    kind: str = "layered"
    n_rewire: int = 0
    seed: int | None = None

    def __post_init__(self):
        self.sizes = _check_sizes(self.sizes)
        self.validate()

    # ---- structure -------------------------------------------------------
    @property
    def n(self) -> int:
        return sum(self.sizes)

    @property
    def offsets(self) -> tuple[int, ...]:
        return _offsets(self.sizes)

    @property
    def layer_of(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.sizes), dtype=np.int64), self.sizes)

    @property
    def n_input(self) -> int:
        return self.sizes[0]

    @property
    def n_output(self) -> int:
        return self.sizes[-1]

    @property
    def slices(self) -> list[slice]:
        off = self.offsets
        return [slice(off[k], off[k + 1]) for k in range(len(self.sizes))]

    def pair_mask(self, a: int, b: int) -> np.ndarray:
        """The (sizes[a], sizes[b]) block of the mask."""
        L = len(self.sizes)
        for name, v in (("a", a), ("b", b)):
            if not _is_int(v) or not 0 <= v < L:
                raise TopologyError(f"{name}: layer {v!r} is not in 0..{L - 1}")
        s = self.slices
        return self.mask[s[a], s[b]]

    # ---- connections -----------------------------------------------------
    def edges(self) -> tuple[np.ndarray, np.ndarray]:
        """Connections (i, j) with i < j, sorted lexicographically (int64)."""
        flat = np.flatnonzero(np.triu(self.mask, 1))
        i, j = np.divmod(flat, self.n)
        return i.astype(np.int64), j.astype(np.int64)

    def dense_blocks(self) -> list[tuple[int, int, int]]:
        """The dense layer blocks of the update's event numbering (docs/numerics.md §5), in
        order, as (a, b, base): for a = 0..L-1, the intralayer block (a, a) if a is a hidden
        layer with at least one connection inside it, then the adjacent block (a, a + 1) if
        a + 1 < L. Block (a, b) reserves sizes[a] * sizes[b] slots (the full rectangle, or
        the full square for (a, a)) from ``base``, the total of the blocks before it."""
        return self._dense_layout()[0]

    def _dense_layout(self) -> tuple[list[tuple[int, int, int]], int]:
        """(dense_blocks(), sparse_base: the total of the dense blocks)."""
        sizes, L = self.sizes, len(self.sizes)
        s = self.slices
        blocks, base = [], 0
        for a in range(L):
            if 0 < a < L - 1 and self.mask[s[a], s[a]].any():
                blocks.append((a, a, base))
                base += sizes[a] * sizes[a]
            if a + 1 < L:
                blocks.append((a, a + 1, base))
                base += sizes[a] * sizes[a + 1]
        return blocks, base

    def slots(self) -> tuple[np.ndarray, int]:
        """(slot of each connection, aligned with :meth:`edges`; n_slots): the connection's
        number in the update's random events (docs/numerics.md §5). A connection (i, j),
        i < j, in dense block (a, b) (see :meth:`dense_blocks`) has slot
        base(a, b) + (i - f_a) * sizes[b] + (j - f_b) (f_l: first neuron of layer l); any
        other (layers two or more apart) has sparse_base + its rank among those in
        ``edges()`` order. n_slots = sparse_base + the number of those. Address counters
        walking a dense block compute its slots without storing them; for a layered
        topology the slots are 0 .. n_conn - 1, the edge-list ranks."""
        i, j = self.edges()
        blocks, sparse_base = self._dense_layout()
        L = len(self.sizes)
        base = np.full((L, L), -1, dtype=np.int64)
        for a, b, bb in blocks:
            base[a, b] = bb
        off = np.asarray(self.offsets, dtype=np.int64)
        size = np.asarray(self.sizes, dtype=np.int64)
        lo = self.layer_of
        la, lb = lo[i], lo[j]
        bij = base[la, lb]
        dense = bij >= 0
        slot = bij + (i - off[la]) * size[lb] + (j - off[lb])
        sparse = ~dense
        n_sparse = int(np.count_nonzero(sparse))
        slot[sparse] = sparse_base + np.arange(n_sparse, dtype=np.int64)
        return slot, sparse_base + n_sparse

    @property
    def n_slots(self) -> int:
        """``slots()[1]`` without numbering the connections: the dense blocks' total plus the
        connections between layers two or more apart."""
        _, sparse_base = self._dense_layout()
        s, L = self.slices, len(self.sizes)
        n_sparse = sum(int(np.count_nonzero(self.mask[s[a], s[b]]))
                       for a in range(L) for b in range(a + 2, L))
        return sparse_base + n_sparse

    def pair_counts(self) -> dict[tuple[int, int], int]:
        """Connection count per layer pair (a, b), a <= b, for pairs with any."""
        i, j = self.edges()
        lo = self.layer_of
        L = len(self.sizes)
        c = np.bincount(lo[i] * L + lo[j], minlength=L * L)
        return {(int(k // L), int(k % L)): int(c[k]) for k in np.flatnonzero(c)}

    def counts(self) -> dict[str, int]:
        """Connections by kind: adjacent, intralayer, skip (|la - lb| >= 2), total."""
        out = {"adjacent": 0, "intralayer": 0, "skip": 0, "total": 0}
        for (a, b), c in self.pair_counts().items():
            d = b - a
            out["intralayer" if d == 0 else "adjacent" if d == 1 else "skip"] += c
            out["total"] += c
        return out

    def n_connections_before_rewire(self) -> int:
        """N_o: connections after the intralayer step, before rewiring."""
        base = _n_layered(self.sizes)
        if self.kind == "layered":
            return base
        return base + _n_intralayer_hidden(self.sizes)

    @property
    def p(self) -> float:
        if self.kind == "layered":
            return 0.0
        return p_from_n(self.n_rewire, self.n_connections_before_rewire())

    # ---- checks ----------------------------------------------------------
    def validate(self) -> None:
        """Raise TopologyError unless the mask is a valid N x N topology."""
        sizes = _check_sizes(self.sizes)
        if self.kind not in KINDS:
            raise TopologyError(f"kind: {self.kind!r} is not one of {', '.join(KINDS)}")
        if not _is_int(self.n_rewire) or self.n_rewire < 0:
            raise TopologyError(f"n_rewire: {self.n_rewire!r} is not a non-negative integer")
        if self.kind == "layered" and self.n_rewire != 0:
            raise TopologyError(f"n_rewire: {self.n_rewire} given for kind 'layered'")
        if self.seed is not None and (not _is_int(self.seed) or self.seed < 0):
            raise TopologyError(f"seed: {self.seed!r} is not a non-negative integer or None")
        m = self.mask
        n = sum(sizes)
        if not isinstance(m, np.ndarray):
            raise TopologyError(f"mask: expected a numpy array, got {type(m).__name__}")
        if m.dtype != np.bool_:
            raise TopologyError(f"mask: dtype {m.dtype} is not bool")
        if m.shape != (n, n):
            raise TopologyError(f"mask: shape {m.shape} is not ({n}, {n}) for sizes {'-'.join(map(str, sizes))}")
        if not np.array_equal(m, m.T):
            i, j = np.argwhere(m != m.T)[0]
            raise TopologyError(f"mask: not symmetric (mask[{i}, {j}] != mask[{j}, {i}])")
        d = np.flatnonzero(np.diagonal(m))
        if d.size:
            raise TopologyError(f"mask: neuron {d[0]} is connected to itself")
        a, b = sizes[0], sizes[-1]
        if m[:a, :a].any():
            i, j = np.argwhere(m[:a, :a])[0]
            raise TopologyError(f"mask: input neurons {i} and {j} are connected")
        if m[n - b:, n - b:].any():
            i, j = np.argwhere(m[n - b:, n - b:])[0] + (n - b)
            raise TopologyError(f"mask: output neurons {i} and {j} are connected")

    def __eq__(self, other):
        if not isinstance(other, Topology):
            return NotImplemented
        return (self.sizes == other.sizes and self.kind == other.kind
                and self.n_rewire == other.n_rewire and self.seed == other.seed
                and np.array_equal(self.mask, other.mask))

    # ---- I/O ---------------------------------------------------------------
    def save(self, path) -> None:
        """Write a compressed .npz (sizes, edge list, kind, n_rewire, seed) to exactly ``path``,
        atomically: a failed write (OSError) leaves ``path`` as it was and no ``.tmp`` file."""
        i, j = self.edges()
        dt = np.uint16 if self.n <= 0xFFFF else np.uint32 if self.n <= 0xFFFFFFFF else np.int64

        def write(fh):
            np.savez_compressed(
                fh,
                format_version=np.int64(_FORMAT_VERSION),
                sizes=np.asarray(self.sizes, dtype=np.int64),
                i=i.astype(dt),
                j=j.astype(dt),
                kind=np.array(self.kind),
                n_rewire=np.int64(self.n_rewire),
                seed=np.int64(-1 if self.seed is None else self.seed),
            )

        atomic_write(os.fspath(path), write)

    @classmethod
    def load(cls, path) -> "Topology":
        """Read a file written by :meth:`save`; rebuild and validate the mask."""
        try:
            with np.load(path, allow_pickle=False) as z:
                version = int(z["format_version"])
                if version != _FORMAT_VERSION:
                    raise ValueError(f"format version {version} is not {_FORMAT_VERSION}")
                sizes = _check_sizes(z["sizes"].tolist())
                i = z["i"].astype(np.int64)
                j = z["j"].astype(np.int64)
                kind = str(z["kind"][()])
                n_rewire = int(z["n_rewire"])
                seed = int(z["seed"])
            n = sum(sizes)
            if i.ndim != 1 or i.shape != j.shape:
                raise ValueError("edge arrays i and j differ in shape")
            if i.size and (i.min() < 0 or j.max() >= n or np.any(i >= j)):
                raise ValueError(f"edge list is not pairs i < j inside 0..{n - 1}")
            flat = i * n + j
            if flat.size > 1 and np.any(np.diff(flat) <= 0):
                raise ValueError("edge list is not sorted or has duplicates")
            mask = np.zeros((n, n), dtype=bool)
            mask[i, j] = True
            mask |= mask.T
            return cls(sizes, mask, kind=kind, n_rewire=n_rewire, seed=None if seed == -1 else seed)
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as e:
            raise TopologyError(f"path: {str(path)!r} is not a valid topology file ({_one_line(e)})") from e

    # ---- text ----------------------------------------------------------------
    def summary(self) -> str:
        c = self.counts()
        s = (f"{self.kind} {'-'.join(map(str, self.sizes))}: {c['total']} connections "
             f"(adjacent {c['adjacent']}, intralayer {c['intralayer']}, layer-skipping {c['skip']})")
        if self.kind != "layered":
            seed = "none" if self.seed is None else self.seed
            s += f"; n={self.n_rewire}, p={100 * self.p:.2f}%, N_o={self.n_connections_before_rewire()}, seed={seed}"
        return s

    def __repr__(self) -> str:
        return f"Topology({self.summary()})"


# --------------------------------------------------------------------------
# constructors
# --------------------------------------------------------------------------

def layered(sizes) -> Topology:
    """All pairs of neurons in adjacent layers connected."""
    sizes = _check_sizes(sizes)
    return Topology(sizes, _layered_mask(sizes), kind="layered", n_rewire=0, seed=None)


def layer_skipping(sizes, n_rewire: int | None = None, p: float | None = None,
                   mode: str = "replace", seed: int | None = 0) -> Topology:
    """Algorithm 1 of the paper: layered + hidden intralayer edges, then ``n`` rewirings.

    ``mode="replace"`` moves a uniformly chosen existing connection to a uniformly
    chosen allowed unconnected pair; ``mode="add"`` only adds. Give ``n_rewire``
    or ``p`` (converted with :func:`n_from_p`), not both; neither means n = 0.
    """
    sizes = _check_sizes(sizes)
    if mode not in _MODE_TO_KIND:
        raise TopologyError(f"mode: {mode!r} is not 'replace' or 'add'")
    if seed is not None and not _is_int(seed):
        raise TopologyError(f"seed: {seed!r} is not an integer or None")
    if seed is not None and seed < 0:
        raise TopologyError(f"seed: {seed} is negative")
    n0 = _n_layered(sizes) + _n_intralayer_hidden(sizes)
    if n_rewire is not None and p is not None:
        raise TopologyError(f"n_rewire/p: give only one of them (got n_rewire={n_rewire!r}, p={p!r})")
    if p is not None:
        n = n_from_p(p, n0)
    elif n_rewire is not None:
        if not _is_int(n_rewire):
            raise TopologyError(f"n_rewire: {n_rewire!r} is not an integer")
        if n_rewire < 0:
            raise TopologyError(f"n_rewire: {n_rewire} is negative")
        n = int(n_rewire)
    else:
        n = 0
    n_free = _n_allowed_pairs(sizes) - n0  # allowed, unconnected pairs at the start
    if mode == "add" and n > n_free:
        raise TopologyError(f"n_rewire: {n} exceeds the {n_free} unconnected allowed pairs")
    if mode == "replace" and n > 0 and n_free == 0:
        raise TopologyError(f"n_rewire: {n} rewirings impossible, there are no unconnected allowed pairs")

    mask = _layered_mask(sizes)
    off = _offsets(sizes)
    for k in range(1, len(sizes) - 1):
        blk = mask[off[k]:off[k + 1], off[k]:off[k + 1]]
        blk[...] = True
        np.fill_diagonal(blk, False)

    N = off[-1]
    rng = np.random.default_rng(seed)
    if n > 0:
        upper = np.triu(_allowed_mask(sizes), 1)
        # Flat indices i*N + j (i < j) of connected and of free (allowed, unconnected) pairs.
        edges = np.flatnonzero(np.triu(mask, 1))
        free = np.flatnonzero(upper & ~mask)
        assert edges.size == n0 and free.size == n_free
        if mode == "replace":
            # Each step: select edge k uniformly, connect free pair r uniformly,
            # remove edge k -- i.e. swap edges[k] <-> free[r]; both sizes stay fixed.
            e = edges.tolist() if edges.size <= 1 << 24 else edges
            f = free.tolist() if free.size <= 1 << 24 else free
            done = 0
            while done < n:
                b = min(_BLOCK, n - done)
                ks = rng.integers(0, n0, size=b).tolist()
                rs = rng.integers(0, n_free, size=b).tolist()
                for k, r in zip(ks, rs):
                    e[k], f[r] = f[r], e[k]
                done += b
            edges = np.asarray(e, dtype=np.int64)
        else:
            # Adding n connections one at a time, each uniform over the remaining
            # free pairs, is a uniform n-subset of the free pairs.
            pick = rng.choice(n_free, size=n, replace=False)
            edges = np.concatenate([edges, free[pick]])
        mask = np.zeros((N, N), dtype=bool)
        mask.flat[edges] = True
        mask |= mask.T
    return Topology(sizes, mask, kind=_MODE_TO_KIND[mode], n_rewire=n, seed=None if seed is None else int(seed))


def from_spec(kind: str, sizes, p: float | None = None, n_rewire: int | None = None,
              seed: int | None = 0) -> Topology:
    """Build a topology by kind name: "layered", "skip" (replace) or "skip-add"."""
    if kind == "layered":
        if p is not None or n_rewire is not None:
            name = "p" if p is not None else "n_rewire"
            val = p if p is not None else n_rewire
            raise TopologyError(f"{name}: {val!r} given for kind 'layered', which has no rewiring")
        return layered(sizes)
    if kind == "skip":
        return layer_skipping(sizes, n_rewire=n_rewire, p=p, mode="replace", seed=seed)
    if kind == "skip-add":
        return layer_skipping(sizes, n_rewire=n_rewire, p=p, mode="add", seed=seed)
    raise TopologyError(f"kind: {kind!r} is not one of {', '.join(KINDS)}")
