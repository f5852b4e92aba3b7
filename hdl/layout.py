"""Build-time layout of a topology onto P multiply-accumulate lanes.

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
  order, each neuron's sources ascending, and ``first`` / ``last`` mark each
  neuron's run within the part. The update walks both parts.
* Every neuron has at least one entry in each part: a neuron without an input
  source gets one *dummy* drive entry, one without a non-input source one
  dummy step entry (weight 0, never updated), so that every neuron passes
  through the pipeline in both walks.
* Neurons are spread over lanes greedily by their step entries (the per-step
  cost; largest first, to the lane with the fewest step entries, ties: the
  fewest drive entries, then the lowest lane), so that lanes finish a
  relaxation step together.
* Every connection between two non-input neurons appears in the lists of both
  end neurons (a symmetric weight has two copies, one per end lane: both are
  updated with the same correction, docs/numerics.md §5-6); a connection to an
  input appears once. Weight memories hold exactly these entries (and the
  dummies): only the connections that exist.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from eqprop.model.topology import Topology


@dataclass(frozen=True)
class Entry:
    neuron: int  # non-input index of the target neuron i (0-based among non-inputs)
    src_input: bool  # the source j is an input
    src: int  # input index, or non-input index of j
    edge: int  # the connection's slot, Topology.slots() (its random event in an update, §5), -1 for a dummy
    pair: int  # index into Layout.pairs: the (layer a <= layer b) rate multiplier
    first: bool  # first entry of its neuron
    last: bool  # last entry of its neuron
    dummy: bool = False


@dataclass
class Lane:
    neurons: list[int]  # non-input indices owned by this lane, ascending
    entries: list[Entry] = field(default_factory=list)  # the drive entries, then the step entries
    n_drive: int = 0  # entries [0, n_drive): the drive part (input sources, and dummies)

    @property
    def n_step(self) -> int:
        """Entries [n_drive, n_drive + n_step): the step part (non-input sources, and dummies)."""
        return len(self.entries) - self.n_drive

    @property
    def drive_entries(self) -> list[Entry]:
        return self.entries[:self.n_drive]

    @property
    def step_entries(self) -> list[Entry]:
        return self.entries[self.n_drive:]

    @property
    def macs(self) -> int:
        """Multiply-accumulates of a relaxation step (the step part without dummies)."""
        return sum(1 for e in self.step_entries if not e.dummy)

    @property
    def drive_macs(self) -> int:
        """Multiply-accumulates of the drive pass (the drive part without dummies)."""
        return sum(1 for e in self.drive_entries if not e.dummy)


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
        return max(len(l.entries) for l in self.lanes)

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


def build_layout(topology: Topology, P: int) -> Layout:
    if P < 1:
        raise ValueError(f"lanes: P must be >= 1, got {P}")
    topology.validate()
    n_in = topology.sizes[0]
    N = topology.n
    S = N - n_in
    if P > S:
        raise ValueError(f"lanes: P = {P} exceeds the {S} non-input neurons")
    mask = topology.mask
    layer = topology.layer_of
    n_drive_of = np.maximum(mask[n_in:, :n_in].sum(1), 1)  # a dummy where no input source
    n_step_of = np.maximum(mask[n_in:, n_in:].sum(1), 1)  # a dummy where no non-input source
    # Greedy balance on the step entries (the cost of every relaxation step): largest first,
    # to the lane with the fewest step entries (ties: the fewest drive entries, then the lowest lane).
    load = [0] * P
    dload = [0] * P
    owner = np.zeros(S, dtype=np.int64)
    for i in sorted(range(S), key=lambda k: (-int(n_step_of[k]), -int(n_drive_of[k]), k)):
        lane = min(range(P), key=lambda l: (load[l], dload[l], l))
        owner[i] = lane
        load[lane] += int(n_step_of[i])
        dload[lane] += int(n_drive_of[i])
    lanes = [Lane(sorted(int(i) for i in np.nonzero(owner == l)[0])) for l in range(P)]
    local = np.zeros(S, dtype=np.int64)
    for lane in lanes:
        for k, i in enumerate(lane.neurons):
            local[i] = k
    # Slots of the connections (their update events, docs/numerics.md §5).
    ei, ej = topology.edges()
    slot, n_slots = topology.slots()
    edge_no = {(int(a), int(b)): int(c) for a, b, c in zip(ei, ej, slot)}
    L = len(topology.sizes)
    pairs = [(a, b) for a in range(L) for b in range(max(a, 1), L)]
    for lane in lanes:
        for drive in (True, False):  # the drive part, then the step part
            for i in lane.neurons:
                g = n_in + i
                srcs = np.nonzero(mask[g])[0]
                srcs = srcs[srcs < n_in] if drive else srcs[srcs >= n_in]
                if len(srcs) == 0:
                    # a dummy: weight 0, never updated (its source field: input 0 or the neuron itself)
                    lane.entries.append(Entry(i, drive, 0 if drive else i, -1,
                                              pairs.index((layer[g], layer[g])), True, True, True))
                    continue
                for k, j in enumerate(srcs):
                    j = int(j)
                    a, b = sorted((int(layer[g]), int(layer[j])))
                    lane.entries.append(Entry(
                        neuron=i,
                        src_input=j < n_in,
                        src=j if j < n_in else j - n_in,
                        edge=edge_no[(min(g, j), max(g, j))],
                        pair=pairs.index((a, b)),
                        first=k == 0,
                        last=k == len(srcs) - 1,
                    ))
            if drive:
                lane.n_drive = len(lane.entries)
    return Layout(topology, P, lanes, owner, local, pairs, len(ei), n_slots)
