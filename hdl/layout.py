"""Build-time layout of a topology onto P multiply-accumulate lanes.

The RTL walks *connection lists*: each non-input neuron belongs to one lane,
and a lane walks, neuron after neuron, the fan-in list of each of its
neurons, one multiply-accumulate per cycle. This module computes those lists
from a ``Topology`` (the same object the models use), so the model, the RTL
and the manifest share one description of the network.

* Neurons are spread over lanes by fan-in, greedily (largest first, to the
  least-loaded lane), so that lanes finish a relaxation step together.
* Every connection between two non-input neurons appears in the lists of both
  end neurons (a symmetric weight has two copies, one per end lane: both are
  updated with the same correction, docs/numerics.md §5-6); a connection to an
  input appears once. Weight memories hold exactly these entries: only the
  connections that exist.
* A neuron without connections gets one *dummy* entry (weight 0, never
  updated) so that every neuron passes through the pipeline.
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
    entries: list[Entry] = field(default_factory=list)

    @property
    def macs(self) -> int:
        return sum(1 for e in self.entries if not e.dummy)


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
        """Entries of the longest lane (cycles of MACs per relaxation step)."""
        return max(len(l.entries) for l in self.lanes)

    @property
    def neurons_per_lane(self) -> int:
        return max(len(l.neurons) for l in self.lanes)

    @property
    def total_macs(self) -> int:
        return sum(l.macs for l in self.lanes)

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
    fan_in = mask[n_in:].sum(1)
    # Greedy balance: largest fan-in first, to the least-loaded lane (ties: lowest lane).
    load = [0] * P
    owner = np.zeros(S, dtype=np.int64)
    for i in sorted(range(S), key=lambda k: (-int(fan_in[k]), k)):
        lane = min(range(P), key=lambda l: (load[l], l))
        owner[i] = lane
        load[lane] += max(int(fan_in[i]), 1)
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
        for i in lane.neurons:
            g = n_in + i
            srcs = np.nonzero(mask[g])[0]
            if len(srcs) == 0:
                lane.entries.append(Entry(i, False, i, -1, pairs.index((layer[g], layer[g])), True, True, True))
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
    return Layout(topology, P, lanes, owner, local, pairs, len(ei), n_slots)
