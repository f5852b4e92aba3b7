"""Build-time layout of a topology onto P multiply-accumulate lanes, in dense-walk order.

The RTL walks *connection lists*: each non-input neuron belongs to one lane,
and a lane walks, neuron after neuron, the fan-in list of each of its
neurons, one multiply-accumulate per cycle. This module computes those lists
from a ``Topology`` (the same object the models use), so the model, the RTL
and the manifest share one description of the network.

* A lane's list has two parts, in this memory order (entry index = the host's
  weight address, ``MemoryMap.weight``, and the line of ``laneK_weights.hex``):
  the *drive* entries ``[0, n_drive)`` (the source is an input: walked once per
  example, the drive pass of docs/numerics.md §2), then the *step* entries
  ``[n_drive, n_drive + n_step)`` (the source is a non-input neuron: walked by
  every relaxation step). In each part the lane's neurons come in ascending
  order, each with one run of entries (``first`` / ``last`` mark it within the
  part). The update walks both parts.
* A neuron x of layer L walks, in each part, first its *dense segments*, then
  its *sparse* sources (issue 10: the dense blocks are walked by address
  counters, without a connection word per entry):

  - a dense segment is a source layer L' with a dense block between L' and L
    (``Topology.dense_blocks()``: L - 1 and L + 1 always, L itself when the
    intralayer block (L, L) is listed), in ascending L'; it walks *every*
    neuron y of L' in ascending order, also where the connection does not
    exist: such a position is a *hole* (a connection Algorithm 1 removed, or
    y = x in an intralayer segment), an entry with ``dummy`` set (weight 0,
    never updated, it multiplies by 0). The segment of the inputs (L' = 0) is
    in the drive part, the others in the step part. Position y of a segment
    has the slot ``base(L', L) + y n_L + x`` (L' < L), ``base(L, L') + x n_L' +
    y`` (L' > L) or ``base(L, L) + min(x, y) n_L + max(x, y)`` (L' = L): it
    starts at the segment's *first slot* and grows by n_L (L' < L, or L' = L
    while y < x) or by 1 (docs/numerics.md §5); a hole's ``edge`` is the slot
    its position would have (an unused event).
  - the sparse sources are x's connections to layers two or more away, in
    ascending source index: the inputs' in the drive part, the others in the
    step part; only these carry per-connection indices (source, slot, pair).

  A neuron with nothing in a part gets one *dummy* entry there (weight 0, never
  updated; source input 0 or the neuron itself; ``edge`` -1, 0 in the RTL's
  field), so that every neuron passes through the pipeline in both walks.
* ``Lane.program`` (``LaneProgram``) is what the counter walk of
  ``units.fanin.FaninStore`` reads: the lane's neurons (index, layer, position
  in the layer, whether it has sparse sources in each part), each dense
  segment's first slot in walk order, the sparse entries (source, slot, pair,
  the neuron's last) and the sorted entry indices of the holes.
* Neurons are spread over lanes greedily by their step entries (the per-step
  cost, holes included; largest first, to the lane with the fewest step
  entries, ties: the fewest drive entries, then the lowest lane), so that lanes
  finish a relaxation step together (``part_sizes`` gives the counts;
  ``generate.design_size`` repeats the greedy).
* Every connection between two non-input neurons appears in the lists of both
  end neurons; a connection to an input appears once. Where each entry's weight
  is stored (its *weight address*, ``waddr``, the host's weight offset and the
  line of ``laneK_weights.hex``) depends on the lanes:

  - one lane (P = 1, ``Layout.once``): **each weight is stored once**. The lane's
    weight memory is the dense blocks, each a rectangle (block (a, b), a < b:
    ``wbase + (i - f_a) n_b + (j - f_b)``, its holes stored as 0) or, for an
    intralayer block, its upper triangle without the diagonal (``wbase + T(u) + v
    - u - 1``, u < v the positions, ``T(u) = u n - u (u + 1) / 2``), then the sparse
    connections in slot order (``waddr = slot - sparse_delta``). Both entries of a
    symmetric weight read the same word; the update writes it through the entry
    whose source comes first (j < i) and skips the other, its *mirror*. The walk
    computes the addresses with counters (a segment's first address in the
    ``segments`` table; strides n_L, 1, or n_L - y - 2 along an intralayer
    segment's lower part).
  - several lanes (P > 1): a symmetric weight has a copy in the lane of each end
    (both updated with the same correction, docs/numerics.md §5-6), and the weight
    address is the entry index: the weight memory holds the connections, the holes
    and the dummies. (A lane's list reads the other end's row of a block; without a
    copy that row is in another lane's memory.)

Everything is computed with numpy, per neuron and segment; the ``Entry`` list of
a lane (``Lane.entries``) is built only when asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from eqprop.model.topology import Topology

#: The version of the lane layout (entry order, hence the weight addresses and the
#: ``laneK_*.hex`` files): 3 is the dense counter walk above with one stored copy of each
#: weight at P = 1; 2 the same walk with a word per entry at every P; 1 (a manifest without
#: the key) the edge-list walk before it. A design of another version cannot be read back with this one.
LAYOUT_VERSION = 3

COLUMNS = ("neuron", "src_input", "src", "edge", "pair", "first", "last", "dummy", "waddr", "mirror")


@dataclass(frozen=True)
class Entry:
    neuron: int  # non-input index of the target neuron i (0-based among non-inputs)
    src_input: bool  # the source j is an input
    src: int  # input index, or non-input index of j
    edge: int  # the connection's slot, Topology.slots() (its random event in an update, §5); a hole:
    # the slot of its position (never used); a neuron's dummy: -1
    pair: int  # index into Layout.pairs: the (layer a <= layer b) rate multiplier
    first: bool  # first entry of its neuron (in its part)
    last: bool  # last entry of its neuron (in its part)
    dummy: bool = False  # a hole or a neuron's dummy: weight 0, never updated
    waddr: int = 0  # where its weight is stored in the lane's weight memory (P > 1: the entry index)
    mirror: bool = False  # P = 1: the weight is also read by the entry of its other end, which
    # the update writes (source j > neuron i, both non-inputs); this entry does not write it


@dataclass(eq=False)
class LaneProgram:
    """What lane's counter walk needs (numpy arrays; ``units.fanin.FaninStore``)."""

    nidx: np.ndarray  # (n_own,) the lane's neurons (non-input index), ascending: Lane.neurons
    layer: np.ndarray  # (n_own,) their layers
    xl: np.ndarray  # (n_own,) their positions in their layers
    has_sparse: np.ndarray  # (n_own, 2) bool: the neuron has sparse sources in the drive, the step part
    seg_first: np.ndarray  # (n_seg,) the first slot of each dense segment, in walk order
    seg_layer: np.ndarray  # (n_seg,) its source layer (Layout.segments gives it from the neuron's layer)
    n_seg_drive: int  # segments [0, n_seg_drive) are the drive part's
    sp_src: np.ndarray  # (n_sparse,) the sparse entries in walk order: input index (drive part) or
    # non-input index (step part) of the source
    sp_slot: np.ndarray  # (n_sparse,) its slot
    sp_pair: np.ndarray  # (n_sparse,) its pair
    sp_last: np.ndarray  # (n_sparse,) bool: the neuron's last sparse source in this part
    n_sparse_drive: int  # sparse entries [0, n_sparse_drive) are the drive part's
    holes: np.ndarray  # sorted entry indices of the holes (not the neurons' dummies)
    n_holes_drive: int  # holes[:n_holes_drive] are in the drive part
    seg_waddr: np.ndarray  # (n_seg,) P = 1: the weight address of each dense segment's first position
    sparse_delta: int  # P = 1: a sparse entry's weight address is its slot minus this

    @property
    def n_seg(self) -> int:
        return len(self.seg_first)

    @property
    def n_sparse(self) -> int:
        return len(self.sp_src)

    @property
    def n_holes(self) -> int:
        return len(self.holes)


@dataclass(eq=False)
class Lane:
    neurons: list[int]  # non-input indices owned by this lane, ascending
    columns: dict  # the entries' fields (COLUMNS), numpy arrays in entry order: drive, then step
    n_drive: int  # entries [0, n_drive): the drive part (input sources, holes, dummies)
    program: LaneProgram
    n_words: int  # words of the lane's weight memory (P > 1: n_entries)

    @property
    def n_entries(self) -> int:
        return len(self.columns["neuron"])

    @property
    def n_step(self) -> int:
        """Entries [n_drive, n_drive + n_step): the step part (non-input sources, holes, dummies)."""
        return self.n_entries - self.n_drive

    @cached_property
    def entries(self) -> list[Entry]:
        """The entries as ``Entry`` objects (built on first use)."""
        c = self.columns
        return [Entry(*row) for row in zip(*(c[k].tolist() for k in COLUMNS))]

    @property
    def drive_entries(self) -> list[Entry]:
        return self.entries[:self.n_drive]

    @property
    def step_entries(self) -> list[Entry]:
        return self.entries[self.n_drive:]

    @property
    def macs(self) -> int:
        """Multiply-accumulates of a relaxation step (the step part's connections)."""
        return int(np.count_nonzero(~self.columns["dummy"][self.n_drive:]))

    @property
    def drive_macs(self) -> int:
        """Multiply-accumulates of the drive pass (the drive part's connections)."""
        return int(np.count_nonzero(~self.columns["dummy"][:self.n_drive]))


@dataclass
class Layout:
    topology: Topology
    P: int
    lanes: list[Lane]
    owner: np.ndarray  # (S,) lane of each non-input neuron
    local: np.ndarray  # (S,) position of each non-input neuron in its lane's list
    pairs: list[tuple[int, int]]  # layer pairs (a <= b) with a multiplier, in a fixed order
    n_edges: int  # connections
    n_slots: int  # slots of the update's events (§5): u (n_slots + S) is update u's first
    segments: dict  # (drive: bool, layer L) -> the source layers of L's dense segments in that part
    block_base: dict  # (a, b) -> the first slot of dense block (a, b) (Topology.dense_blocks())
    weight_base: dict  # P = 1: (a, b) -> the first weight address of dense block (a, b); else {}

    @property
    def once(self) -> bool:
        """Each weight stored once (P = 1; module docstring), else a copy per end lane."""
        return self.P == 1

    @property
    def lane_words(self) -> int:
        """Words of the largest lane weight memory (the host's weight offsets)."""
        return max(max(l.n_words for l in self.lanes), 1)

    @property
    def n_in(self) -> int:
        return self.topology.sizes[0]

    @property
    def S(self) -> int:
        return self.topology.n - self.n_in

    @property
    def out_first(self) -> int:
        """Non-input index of the first output neuron."""
        return self.S - self.topology.sizes[-1]

    @property
    def lane_depth(self) -> int:
        """Entries of the longest lane (its memories' depth; cycles of the update's walk)."""
        return max(l.n_entries for l in self.lanes)

    @property
    def drive_depth(self) -> int:
        """Drive entries of the longest drive part (cycles of MACs of the drive pass)."""
        return max(l.n_drive for l in self.lanes)

    @property
    def step_depth(self) -> int:
        """Step entries of the longest step part (cycles of MACs per relaxation step)."""
        return max(l.n_step for l in self.lanes)

    @property
    def neurons_per_lane(self) -> int:
        return max(len(l.neurons) for l in self.lanes)

    @property
    def total_macs(self) -> int:
        """Multiply-accumulates of one relaxation step, all lanes."""
        return sum(l.macs for l in self.lanes)

    @property
    def total_drive_macs(self) -> int:
        """Multiply-accumulates of one drive pass, all lanes."""
        return sum(l.drive_macs for l in self.lanes)

    def pair_index(self, a: int, b: int) -> int:
        return self.pairs.index((min(a, b), max(a, b)))


def layer_pairs(n_layers: int) -> list[tuple[int, int]]:
    """The layer pairs (a <= b) of the rate multipliers, in Layout.pairs' order."""
    return [(a, b) for a in range(n_layers) for b in range(max(a, 1), n_layers)]


def dense_segments(topology: Topology) -> tuple[dict, dict]:
    """(segments, block_base): ``segments[(drive, L)]`` the source layers of a layer-L neuron's
    dense segments in the drive (True) or step (False) part, ascending; ``block_base[(a, b)]``
    the first slot of dense block (a, b)."""
    L = len(topology.sizes)
    base = {(a, b): bb for a, b, bb in topology.dense_blocks()}
    seg = {}
    for l in range(1, L):
        seg[(True, l)] = (0,) if l == 1 else ()
        seg[(False, l)] = tuple(s for s in (l - 1, l, l + 1) if 1 <= s < L and (min(s, l), max(s, l)) in base)
    return seg, base


def weight_bases(topology: Topology) -> tuple[dict, int, int]:
    """P = 1's weight memory (module docstring): (first weight address of each dense block,
    sparse_delta: slot - weight address of a sparse connection, n_words)."""
    sizes = topology.sizes
    blocks = topology.dense_blocks()
    wb, nxt = {}, 0
    for a, b, _ in blocks:
        wb[(a, b)] = nxt
        nxt += sizes[a] * (sizes[a] - 1) // 2 if a == b else sizes[a] * sizes[b]
    sparse_base = sum(sizes[a] * sizes[b] for a, b, _ in blocks)
    n_slots = topology.n_slots
    return wb, sparse_base - nxt, n_slots - (sparse_base - nxt)


def part_sizes(topology: Topology) -> dict:
    """Per non-input neuron (arrays of S), without building the lists: ``entries`` (2, S) the
    drive and step part's entries (dense positions + sparse sources, or 1: a dummy),
    ``segments``, ``sparse``, ``holes`` (2, S) each, by part."""
    sizes, n_in = topology.sizes, topology.sizes[0]
    L, sl, mask = len(sizes), topology.slices, topology.mask
    seg, _ = dense_segments(topology)
    S = topology.n - n_in
    out = {k: np.zeros((2, S), dtype=np.int64) for k in ("entries", "segments", "sparse", "holes")}
    for l in range(1, L):
        rows = slice(sl[l].start - n_in, sl[l].stop - n_in)
        for part, drive in enumerate((True, False)):
            dense = sum(sizes[s] for s in seg[(drive, l)])
            conn = sum(mask[sl[l], sl[s]].sum(1) for s in seg[(drive, l)]) if seg[(drive, l)] else 0
            srcs = [0] if drive else range(1, L)
            sparse = sum(mask[sl[l], sl[s]].sum(1) for s in srcs if abs(s - l) >= 2)
            sparse = sparse if isinstance(sparse, np.ndarray) else np.zeros(sizes[l], dtype=np.int64)
            out["segments"][part, rows] = len(seg[(drive, l)])
            out["sparse"][part, rows] = sparse
            out["holes"][part, rows] = dense - conn
            out["entries"][part, rows] = np.maximum(dense + sparse, 1)
    return out


def greedy_lanes(drive_of: np.ndarray, step_of: np.ndarray, P: int) -> np.ndarray:
    """The lane of each neuron: largest step part first, to the lane with the fewest step
    entries (ties: the fewest drive entries, then the lowest lane)."""
    load = [0] * P
    dload = [0] * P
    owner = np.zeros(len(step_of), dtype=np.int64)
    for i in sorted(range(len(step_of)), key=lambda k: (-int(step_of[k]), -int(drive_of[k]), k)):
        lane = min(range(P), key=lambda l: (load[l], dload[l], l))
        owner[i] = lane
        load[lane] += int(step_of[i])
        dload[lane] += int(drive_of[i])
    return owner


def build_layout(topology: Topology, P: int) -> Layout:
    if P < 1:
        raise ValueError(f"lanes: P must be >= 1, got {P}")
    topology.validate()
    sizes = topology.sizes
    n_in = sizes[0]
    N = topology.n
    S = N - n_in
    if P > S:
        raise ValueError(f"lanes: P = {P} exceeds the {S} non-input neurons")
    mask = topology.mask
    layer = topology.layer_of
    off = topology.offsets
    nL = len(sizes)
    counts = part_sizes(topology)
    owner = greedy_lanes(counts["entries"][0], counts["entries"][1], P)
    members = [np.flatnonzero(owner == l) for l in range(P)]
    local = np.zeros(S, dtype=np.int64)
    for mem in members:
        local[mem] = np.arange(len(mem))
    # Slots of the connections (their update events, docs/numerics.md §5): the sparse ones by lookup
    ei, ej = topology.edges()
    slot, n_slots = topology.slots()
    keys = ei * N + ej  # ascending (edges() is sorted)
    pairs = layer_pairs(nL)
    pair_of = np.full((nL, nL), -1, dtype=np.int64)
    for q, (a, b) in enumerate(pairs):
        pair_of[a, b] = pair_of[b, a] = q
    seg, base = dense_segments(topology)
    once = P == 1
    wbase, sparse_delta, n_words = weight_bases(topology) if once else ({}, 0, 0)
    far = [np.abs(layer - l) >= 2 for l in range(nL)]
    is_input = np.arange(N) < n_in
    lanes = []
    for mem in members:
        cols = {k: [] for k in COLUMNS}
        prog = {"seg_first": [], "seg_layer": [], "sp_src": [], "sp_slot": [], "sp_pair": [], "sp_last": [],
                "holes": [], "seg_waddr": []}
        n_part = {}
        has_sparse = np.zeros((len(mem), 2), dtype=bool)
        pos = 0
        for part, drive in enumerate((True, False)):
            for k, i in enumerate(mem.tolist()):
                g = n_in + i
                l = int(layer[g])
                x = g - off[l]
                src, edge, pair, dummy, waddr, mirror = [], [], [], [], [], []
                for s in seg[(drive, l)]:
                    y = np.arange(sizes[s], dtype=np.int64)
                    if s < l:
                        sl = base[(s, l)] + y * sizes[l] + x
                    elif s > l:
                        sl = base[(l, s)] + x * sizes[s] + y
                    else:
                        sl = base[(l, l)] + np.minimum(x, y) * sizes[l] + np.maximum(x, y)
                    hole = ~mask[g, off[s] + y]
                    start = pos + sum(len(a) for a in src)
                    if once:  # the block's stored word (module docstring); a diagonal hole: T(x) - 1
                        if s < l:
                            wa = wbase[(s, l)] + y * sizes[l] + x
                        elif s > l:
                            wa = wbase[(l, s)] + x * sizes[s] + y
                        else:
                            u, v, n = np.minimum(x, y), np.maximum(x, y), sizes[l]
                            wa = wbase[(l, l)] + u * n - u * (u + 1) // 2 + v - u - 1
                        waddr.append(wa)
                        prog["seg_waddr"].append(int(wa[0]))
                    else:
                        waddr.append(start + y)
                    mirror.append(np.full(sizes[s], False) if drive else off[s] + y > g)
                    prog["seg_first"].append(int(sl[0]))
                    prog["seg_layer"].append(s)
                    prog["holes"].append(start + np.flatnonzero(hole))
                    src.append(off[s] + y)
                    edge.append(sl)
                    pair.append(np.full(sizes[s], pair_of[l, s]))
                    dummy.append(hole)
                js = np.flatnonzero(mask[g] & far[l] & (is_input if drive else ~is_input))
                if len(js):
                    has_sparse[k, part] = True
                    sl = slot[np.searchsorted(keys, np.minimum(g, js) * N + np.maximum(g, js))]
                    pj = pair_of[l, layer[js]]
                    last = np.zeros(len(js), dtype=bool)
                    last[-1] = True
                    prog["sp_src"].append(js if drive else js - n_in)
                    prog["sp_slot"].append(sl)
                    prog["sp_pair"].append(pj)
                    prog["sp_last"].append(last)
                    waddr.append(sl - sparse_delta if once else pos + sum(len(a) for a in src)
                                 + np.arange(len(js)))
                    mirror.append(np.zeros(len(js), dtype=bool) if drive else js > g)
                    src.append(js)
                    edge.append(sl)
                    pair.append(pj)
                    dummy.append(np.zeros(len(js), dtype=bool))
                if not src:  # a dummy: weight 0, never updated (its source: input 0 or the neuron itself)
                    src, edge, pair, dummy = [np.array([0 if drive else g])], [np.array([-1])], \
                        [np.array([pair_of[l, l]])], [np.array([True])]
                    waddr, mirror = [np.array([0 if once else pos])], [np.array([False])]
                src = np.concatenate(src)
                n = len(src)
                first = np.zeros(n, dtype=bool)
                first[0] = True
                last = np.zeros(n, dtype=bool)
                last[-1] = True
                cols["neuron"].append(np.full(n, i))
                cols["src_input"].append(np.full(n, drive))
                cols["src"].append(src if drive else src - n_in)
                cols["edge"].append(np.concatenate(edge))
                cols["pair"].append(np.concatenate(pair))
                cols["first"].append(first)
                cols["last"].append(last)
                cols["dummy"].append(np.concatenate(dummy))
                cols["waddr"].append(np.concatenate(waddr))
                cols["mirror"].append(np.concatenate(mirror) if once else np.zeros(n, dtype=bool))
                pos += n
            n_part[part] = (pos, len(prog["seg_first"]), sum(len(a) for a in prog["sp_src"]),
                            sum(len(a) for a in prog["holes"]))
        columns = {k: np.concatenate(v).astype(bool if k in ("src_input", "first", "last", "dummy", "mirror")
                                                else np.int64)
                   for k, v in cols.items()}

        def cat(key, dtype=np.int64):
            return np.concatenate(prog[key]).astype(dtype) if prog[key] else np.zeros(0, dtype=dtype)

        program = LaneProgram(
            nidx=mem.astype(np.int64), layer=layer[n_in + mem].astype(np.int64),
            xl=(n_in + mem - np.asarray(off)[layer[n_in + mem]]).astype(np.int64), has_sparse=has_sparse,
            seg_first=np.asarray(prog["seg_first"], dtype=np.int64),
            seg_layer=np.asarray(prog["seg_layer"], dtype=np.int64), n_seg_drive=n_part[0][1],
            sp_src=cat("sp_src"), sp_slot=cat("sp_slot"), sp_pair=cat("sp_pair"), sp_last=cat("sp_last", bool),
            n_sparse_drive=n_part[0][2], holes=cat("holes"), n_holes_drive=n_part[0][3],
            seg_waddr=np.asarray(prog["seg_waddr"], dtype=np.int64), sparse_delta=sparse_delta)
        lanes.append(Lane(mem.tolist(), columns, n_part[0][0], program, n_words if once else pos))
    return Layout(topology, P, lanes, owner, local, pairs, len(ei), n_slots, seg, base, wbase)
