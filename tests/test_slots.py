"""Slots: the connections' numbers in the update's random events (docs/numerics.md §5).

``Topology.slots()`` is checked against a double loop written from the text, a
hand-written list, and the edge-list rank on layered networks; the fixed model, the
golden model and the RTL layout must number update events with it."""

import numpy as np
import pytest
import torch

from eqprop.model.fixed_net import FixedNetwork
from eqprop.model.golden import GoldenNetwork
from eqprop.model.numerics import numerics_from_mapping
from eqprop.model.topology import Topology, layer_skipping, layered

PAPER = (784, 500, 500, 500, 10)


def brute_slots(sizes, mask):
    """The definition of §5, pair by pair: ({(i, j): slot}, n_slots, {(a, b): (base, size)})."""
    L = len(sizes)
    first, layer = [], []
    for l, n in enumerate(sizes):
        first.append(len(layer))
        layer += [l] * n
    N = len(layer)
    blocks, nxt = {}, 0
    for a in range(L):
        intra = any(mask[i, j] for i in range(N) for j in range(i + 1, N) if layer[i] == layer[j] == a)
        if 0 < a < L - 1 and intra:
            blocks[(a, a)] = (nxt, sizes[a] * sizes[a])
            nxt += sizes[a] * sizes[a]
        if a + 1 < L:
            blocks[(a, a + 1)] = (nxt, sizes[a] * sizes[a + 1])
            nxt += sizes[a] * sizes[a + 1]
    slot = {}
    for i in range(N):  # i < j in lexicographic order: the edge list's order
        for j in range(i + 1, N):
            if not mask[i, j]:
                continue
            a, b = layer[i], layer[j]
            if (a, b) in blocks:
                slot[(i, j)] = blocks[(a, b)][0] + (i - first[a]) * sizes[b] + (j - first[b])
            else:
                assert b - a >= 2
                slot[(i, j)] = nxt
                nxt += 1
    return slot, nxt, blocks


def _hand(pairs, sizes=(2, 2, 2)) -> Topology:
    n = sum(sizes)
    m = np.zeros((n, n), dtype=bool)
    for i, j in pairs:
        m[i, j] = m[j, i] = True
    return Topology(sizes, m, kind="skip")


SKIPS = [
    lambda: layer_skipping([6, 5, 4, 3], p=0.3, seed=3),
    lambda: layer_skipping([6, 5, 4, 3], p=0.3, seed=4, mode="add"),
    lambda: layer_skipping([4, 3, 3, 3, 2], n_rewire=40, seed=0),  # hidden layer 1 lost all its intralayer edges
    lambda: layer_skipping([4, 3, 3, 3, 2], n_rewire=40, seed=5),  # hidden layer 3 did
    lambda: layer_skipping([3, 4, 2], n_rewire=30, seed=7),
]


@pytest.mark.parametrize("make", SKIPS)
def test_slots_match_the_definition(make):
    t = make()
    i, j = t.edges()
    slot, n_slots = t.slots()
    want, want_n, blocks = brute_slots(t.sizes, t.mask)
    assert slot.dtype == np.int64 and slot.shape == i.shape
    assert [want[(int(a), int(b))] for a, b in zip(i, j)] == slot.tolist()
    assert n_slots == want_n == t.n_slots
    assert len(np.unique(slot)) == len(slot) and slot.min() >= 0 and slot.max() < n_slots
    assert t.dense_blocks() == [(a, b, base) for (a, b), (base, _) in blocks.items()]
    assert t.counts()["skip"] > 0  # the sparse part is exercised
    hidden = range(1, len(t.sizes) - 1)
    assert [a for a, b, _ in t.dense_blocks() if a == b] == [l for l in hidden if t.pair_mask(l, l).any()]
    lo = t.layer_of
    sparse_base = sum(size for _, size in blocks.values())
    for a, b, s in zip(i, j, slot):
        key = (int(lo[a]), int(lo[b]))
        if key in blocks:
            base, size = blocks[key]
            assert base <= s < base + size
        else:
            assert s >= sparse_base


def test_random_cases_include_a_hidden_layer_without_a_square():
    # 4-3-3-3-2 has 7 blocks when every hidden layer keeps an intralayer connection
    assert len(SKIPS[2]().dense_blocks()) == len(SKIPS[3]().dense_blocks()) == 6


def test_a_hidden_layer_without_intralayer_edges_has_no_square():
    t = _hand([(0, 2), (1, 3), (2, 4), (3, 5), (0, 4)])
    assert t.dense_blocks() == [(0, 1, 0), (1, 2, 4)]
    assert t.slots()[0].tolist() == [0, 8, 3, 4, 7] and t.slots()[1] == 9


def test_hand_written_slots():
    # sizes 2-2-2: inputs 0 1, hidden 2 3, outputs 4 5; intralayer (2, 3), skip (0, 4).
    # Blocks: (0, 1) from 0, (1, 1) from 4, (1, 2) from 8; sparse_base 12.
    t = _hand([(0, 2), (1, 3), (2, 3), (2, 4), (3, 5), (0, 4)])
    i, j = t.edges()
    assert list(zip(i.tolist(), j.tolist())) == [(0, 2), (0, 4), (1, 3), (2, 3), (2, 4), (3, 5)]
    assert t.dense_blocks() == [(0, 1, 0), (1, 1, 4), (1, 2, 8)]
    slot, n_slots = t.slots()
    assert slot.tolist() == [0, 12, 3, 5, 8, 11]
    assert n_slots == t.n_slots == 13


@pytest.mark.parametrize("sizes", [(2, 2, 2), (6, 5, 4, 3), (7, 1, 3), (3, 5)])
def test_layered_slots_are_the_edge_ranks(sizes):
    t = layered(sizes)
    slot, n_slots = t.slots()
    assert slot.tolist() == list(range(len(t.edges()[0])))
    assert n_slots == t.n_slots == t.counts()["total"]
    assert [b for _, _, b in t.dense_blocks()] == list(np.cumsum([0, *[a * b for a, b in zip(sizes, sizes[1:])]])[:-1])


def test_layer_skipping_without_rewiring_has_no_sparse_part():
    t = layer_skipping([4, 3, 3, 2], n_rewire=0)
    slot, n_slots = t.slots()
    assert n_slots == 4 * 3 + 3 * 3 + 3 * 3 + 3 * 3 + 3 * 2
    assert len(np.unique(slot)) == len(slot)


def test_paper_size_slots():
    t = layer_skipping(PAPER, p=0.0756, seed=0)
    slot, n_slots = t.slots()
    dense = 784 * 500 + 3 * 500 * 500 + 2 * 500 * 500 + 500 * 10
    assert n_slots == dense + t.counts()["skip"] == t.n_slots
    assert slot.shape == (t.counts()["total"],)
    assert len(np.unique(slot)) == len(slot) and slot.max() < n_slots


@pytest.mark.parametrize("make", [SKIPS[0], SKIPS[2], lambda: layered([4, 3, 2])])
def test_models_and_layout_number_update_events_by_slot(make):
    from eqprop.hdl.layout import build_layout

    t = make()
    want, n_slots, blocks = brute_slots(t.sizes, t.mask)
    num = numerics_from_mapping({"rounding": "stochastic"})
    net = FixedNetwork(t, num, 0.5, 1.0, 1, [1.0])
    n_in, S = t.n_input, t.n - t.n_input
    assert net.events_per_update == n_slots + S
    assert net.ev_b.tolist() == list(range(n_slots, n_slots + S))
    ev = torch.full((t.n, t.n), -1, dtype=torch.int64)
    ev[:n_in, n_in:], ev[n_in:, n_in:] = net.ev_in, net.ev_ss
    for (i, j), s in want.items():  # i < j: row i holds it; both copies when i is not an input
        assert ev[i, j] == s and (i < n_in or ev[j, i] == s)
    gold = GoldenNetwork(t, num, 0.5, 1.0, 1, [1.0])
    assert gold.slot == want and gold.n_slots == n_slots
    lay = build_layout(t, 2)
    assert lay.n_slots == n_slots and lay.n_edges == len(want)
    layer, first = t.layer_of, t.offsets
    for lane in lay.lanes:
        for e in lane.entries:
            g = n_in + e.neuron
            src = e.src if e.src_input else n_in + e.src
            a, b = min(g, src), max(g, src)
            if e.dummy and e.edge < 0:  # a neuron's dummy (no source of its part): no event
                continue
            if e.dummy:  # a hole of a dense segment: the slot of its position, an unused event
                la, lb = layer[a], layer[b]
                assert not t.mask[a, b] and (a, b) not in want
                assert e.edge == blocks[(la, lb)][0] + (a - first[la]) * t.sizes[lb] + (b - first[lb])
            else:
                assert e.edge == want[(a, b)]
