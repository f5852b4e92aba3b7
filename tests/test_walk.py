"""The dense-walk layout (hdl/layout.py) and the counter walk of FaninStore (hdl/units/fanin.py),
issue 10.

The layout is checked against an independent construction from ``topology.mask`` (each
neuron's dense segments position by position, then its sparse sources), and the counter walk
against the layout's rows (``entry_rows``, what the connection ROM of ``RomFaninStore`` holds)
word for word, over the DRIVE, STEP and ALL walks, with and without stalls."""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from eqprop.hdl.enums import Walk
from eqprop.hdl.layout import build_layout, part_sizes
from eqprop.hdl.params import CoreParams
from eqprop.hdl.units.fanin import FaninStore, RomFaninStore, entry_rows, walk_tables
from eqprop.model.numerics import numerics_from_mapping
from eqprop.model.topology import layer_skipping, layered

FIXED = {"state": "fxp-u8/7", "weight": "fxp-s8/6", "weight_store": "fxp-s12/10", "bias": 10}

TOPOLOGIES = {
    "layered-3": lambda: layered([4, 3, 2]),  # output neurons: no input source (a drive dummy)
    "layered-5": lambda: layered([5, 4, 3, 3, 2]),
    "layered-2": lambda: layered([4, 3]),  # no non-input source at all (a step dummy each)
    "skip": lambda: layer_skipping([6, 5, 4, 3], n_rewire=6, seed=1),
    "skip-p": lambda: layer_skipping([6, 5, 4, 3], p=0.3, seed=3),
    "skip-add": lambda: layer_skipping([6, 5, 4, 3], p=0.3, seed=4, mode="add"),
    "skip-lost-intra": lambda: layer_skipping([4, 3, 3, 3, 2], n_rewire=40, seed=0),  # layer 1: no (1, 1) block
    "skip-5": lambda: layer_skipping([4, 3, 3, 3, 2], n_rewire=40, seed=5),
}


def _params(topo, P, weight_init="verilog", store=None):
    fmt = FIXED | ({"weight_store": store, "weight": store} if store else {})
    return CoreParams(topo, numerics_from_mapping(fmt), 0.5, 1.0, [0.5], P, n_free=1, n_nudged=1,
                      weight_init=weight_init)


def _expected_runs(topo):
    """{(non-input neuron, drive part?): [(src_input, src, edge, pair, dummy), ...]}, from the mask
    and the definition of the slots (docs/numerics.md §5), without hdl/layout.py."""
    sizes, mask = topo.sizes, topo.mask
    n_in, N, L = sizes[0], topo.n, len(sizes)
    first = [sum(sizes[:l]) for l in range(L)]
    layer = [l for l in range(L) for _ in range(sizes[l])]
    ei, ej = topo.edges()
    slots, _ = topo.slots()
    slot = {(int(a), int(b)): int(c) for a, b, c in zip(ei, ej, slots)}
    base, nxt = {}, 0  # the dense blocks, in order (§5)
    for a in range(L):
        if 0 < a < L - 1 and mask[first[a]:first[a] + sizes[a], first[a]:first[a] + sizes[a]].any():
            base[(a, a)], nxt = nxt, nxt + sizes[a] * sizes[a]
        if a + 1 < L:
            base[(a, a + 1)], nxt = nxt, nxt + sizes[a] * sizes[a + 1]
    pairs = [(a, b) for a in range(L) for b in range(max(a, 1), L)]
    out = {}
    for g in range(n_in, N):
        lg = layer[g]
        for drive in (True, False):
            run = []
            for ls in range(L):  # dense segments: every position of the source layer, ascending
                if (min(ls, lg), max(ls, lg)) not in base or (ls == 0) != drive:
                    continue
                for h in range(first[ls], first[ls] + sizes[ls]):
                    a, b = min(g, h), max(g, h)
                    la, lb = layer[a], layer[b]
                    pos_slot = base[(la, lb)] + (a - first[la]) * sizes[lb] + (b - first[lb])
                    if mask[g, h]:
                        assert slot[(a, b)] == pos_slot
                    run.append((drive, h if drive else h - n_in, pos_slot, pairs.index((min(la, lb), max(la, lb))),
                                not mask[g, h]))
            for h in range(N):  # sparse sources, ascending
                if mask[g, h] and abs(layer[h] - lg) >= 2 and (h < n_in) == drive:
                    a, b = min(g, h), max(g, h)
                    run.append((drive, h if drive else h - n_in, slot[(a, b)],
                                pairs.index((min(lg, layer[h]), max(lg, layer[h]))), False))
            if not run:  # a dummy
                run = [(drive, 0 if drive else g - n_in, -1, pairs.index((lg, lg)), True)]
            out[(g - n_in, drive)] = run
    return out


@pytest.mark.parametrize("P", [1, 2, 3])
@pytest.mark.parametrize("name", list(TOPOLOGIES))
def test_layout_is_the_dense_walk_of_the_mask(name, P):
    topo = TOPOLOGIES[name]()
    lay = build_layout(topo, P)
    want = _expected_runs(topo)
    n_in, mask = topo.sizes[0], topo.mask
    conn_seen = {}
    for lane in lay.lanes:
        c = lane.columns
        for part, (lo, hi) in enumerate(((0, lane.n_drive), (lane.n_drive, lane.n_entries))):
            drive = part == 0
            got = lane.entries[lo:hi]
            assert [e.neuron for e in got if e.first] == lane.neurons  # one run per neuron, in order
            assert [e.neuron for e in got if e.last] == lane.neurons
            k = 0
            for i in lane.neurons:
                run = want[(i, drive)]
                have = [(e.src_input, e.src, e.edge, e.pair, e.dummy) for e in got[k:k + len(run)]]
                assert have == run, (name, P, i, drive)
                assert got[k].first and got[k + len(run) - 1].last
                for e in got[k:k + len(run)]:
                    if not e.dummy:
                        j = e.src if e.src_input else n_in + e.src
                        conn_seen[(n_in + i, j)] = conn_seen.get((n_in + i, j), 0) + 1
                k += len(run)
            assert k == len(got)
        # the program: holes are the dummies with a slot (not a neuron's dummy), in entry order
        holes = np.flatnonzero(c["dummy"] & (c["edge"] >= 0))
        assert lane.program.holes.tolist() == holes.tolist()
        assert lane.program.n_holes_drive == int(np.count_nonzero(holes < lane.n_drive))
        assert lane.program.nidx.tolist() == lane.neurons
    # every connection once in each end neuron's list (non-input ends), holes exactly the missing positions
    ends = {(int(a), int(b)) for a, b in zip(*np.nonzero(mask)) if a >= n_in}
    assert set(conn_seen) == ends and set(conn_seen.values()) == {1}
    # part_sizes (the greedy's and design_size's counts) agree with the lists
    ps = part_sizes(topo)
    sparse_base = topo._dense_layout()[1]  # the first sparse slot
    for lane in lay.lanes:
        for part, ents in enumerate((lane.drive_entries, lane.step_entries)):
            for i in lane.neurons:
                mine = [e for e in ents if e.neuron == i]
                assert ps["entries"][part, i] == len(mine)
                assert ps["holes"][part, i] == sum(e.dummy and e.edge >= 0 for e in mine)
                assert ps["sparse"][part, i] == sum(1 for e in mine if not e.dummy and e.edge >= sparse_base)


def _expected_words(topo):
    """P = 1's weight memory from its definition (hdl/layout.py), without it: {(a, b): word} for
    each connection a < b (global indices), and the number of words: the dense blocks in
    Topology.dense_blocks() order, an adjacent block as its rectangle, an intralayer block as
    the upper triangle of its square without the diagonal (row by row), then the sparse
    connections in edge-list order."""
    sizes, L = topo.sizes, len(topo.sizes)
    first = [sum(sizes[:l]) for l in range(L)]
    layer = [l for l in range(L) for _ in range(sizes[l])]
    base, nxt = {}, 0
    for a, b, _ in topo.dense_blocks():
        base[(a, b)] = nxt
        nxt += sizes[a] * sizes[b] if a != b else sizes[a] * (sizes[a] - 1) // 2
    words = {}
    tri = {}  # (layer, u, v) -> rank in the triangle, by counting
    for l in range(L):
        r = 0
        for u in range(sizes[l]):
            for v in range(u + 1, sizes[l]):
                tri[(l, u, v)] = r
                r += 1
    ei, ej = topo.edges()
    for a, b in zip(ei.tolist(), ej.tolist()):
        la, lb = layer[a], layer[b]
        if (la, lb) in base and la < lb:
            words[(a, b)] = base[(la, lb)] + (a - first[la]) * sizes[lb] + (b - first[lb])
        elif (la, lb) in base:
            words[(a, b)] = base[(la, la)] + tri[(la, a - first[la], b - first[la])]
        else:
            words[(a, b)] = nxt
            nxt += 1
    return words, nxt


@pytest.mark.parametrize("name", list(TOPOLOGIES))
def test_one_lane_stores_each_weight_once(name):
    """P = 1: both entries of a connection read its one word, the word the definition gives;
    exactly one of them (the one whose source comes first) writes it, the other is its
    mirror; the memory holds the dense rectangles, the intralayer triangles and the sparse
    connections. P > 1: a word per entry, no mirrors."""
    topo = TOPOLOGIES[name]()
    want, n_words = _expected_words(topo)
    n_in = topo.sizes[0]
    lane = build_layout(topo, 1).lanes[0]
    c = lane.columns
    assert lane.n_words == n_words
    writers = {}
    for e in lane.entries:
        if e.dummy:
            continue
        g, j = n_in + e.neuron, e.src if e.src_input else n_in + e.src
        assert e.waddr == want[(min(g, j), max(g, j))], (name, e)
        assert e.mirror == (not e.src_input and j > g)
        if not e.mirror:
            writers[e.waddr] = writers.get(e.waddr, 0) + 1
    assert sorted(writers) == sorted(want.values()) and set(writers.values()) == {1}
    assert c["waddr"].min() >= 0 and c["waddr"].max() < n_words
    for P in (2, 3):
        for ln in build_layout(topo, P).lanes:
            assert ln.columns["waddr"].tolist() == list(range(ln.n_entries)) and not ln.columns["mirror"].any()
            assert ln.n_words == ln.n_entries


@pytest.mark.parametrize("P", [1, 2, 3])
def test_lane_words_round_trip(P):
    """CoreParams.lane_weights (matrices -> each lane's words by weight address) and
    weights_from_lanes (back) are inverse on a symmetric network's weights."""
    import torch

    p = _params(TOPOLOGIES["skip-5"](), P)
    n_in, mask = p.layout.n_in, p.topology.mask
    W = np.triu(np.random.default_rng(P).integers(-2000, 2000, mask.shape), 1)
    W = (W + W.T) * mask
    W_in, W_ss = W[:n_in, n_in:], W[n_in:, n_in:]
    words = p.lane_weights(torch.tensor(W_in), torch.tensor(W_ss))
    assert [len(w) for w in words] == [ln.n_words for ln in p.layout.lanes]
    a, b = p.weights_from_lanes(words)
    assert (a == W_in).all() and (b == W_ss).all()


def _walk(dut, ranges, rng=None, stall=0.0):
    """The fields and weights a store gives for each walk of ``ranges`` ((walk, lo, hi, end): the
    walk's range ends at ``end``, the bench stops it at ``hi``), with ``advance`` held low at
    random cycles (probability ``stall``)."""
    out = []

    async def bench(ctx):
        for walk, lo, hi, end in ranges:
            ctx.set(dut.start, 1), ctx.set(dut.walk, walk), ctx.set(dut.advance, 0)
            await ctx.tick()
            ctx.set(dut.start, 0), ctx.set(dut.walk, Walk.DRIVE)  # read with start only
            k, rows = lo, []
            while k < hi:
                adv = not (rng and rng.random() < stall)
                ctx.set(dut.advance, adv)
                assert ctx.get(dut.pos) == k and ctx.get(dut.last) == (k == end - 1)
                await ctx.tick()
                f = ctx.get(dut.entry)
                rows.append((k, {n: int(getattr(f, n)) for n in f.shape().members}, ctx.get(dut.weight)))
                k += adv
            ctx.set(dut.advance, 1)  # one advance past the end, as the MAC and the update do
            await ctx.tick()
            ctx.set(dut.advance, 0)
            out.append(rows)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return out


@pytest.mark.parametrize("P,init", [(1, "verilog"), (2, "verilog"), (3, "verilog"), (1, "host")])
@pytest.mark.parametrize("name", list(TOPOLOGIES))
def test_counter_walk_gives_the_layouts_rows(name, P, init):
    """Every lane's counter walk over DRIVE, STEP and ALL (one after the other, a walk cut short
    by a new start, stalls) gives the layout's rows, word for word, with the stored weights
    (also packed two to a word: weight_init = "host" with 8-bit stored weights)."""
    p = _params(TOPOLOGIES[name](), P, init, "fxp-s8/6" if init == "host" else None)
    rnd = random.Random(P)
    for ell, lane in enumerate(p.layout.lanes):
        rows = entry_rows(p, ell)
        fmt = p.num.weight_store
        ws = [rnd.randrange(fmt.min_raw, fmt.max_raw + 1) for _ in range(lane.n_words)]  # by weight address
        nd, nt = lane.n_drive, lane.n_entries
        ranges = [(Walk.DRIVE, 0, nd, nd), (Walk.STEP, nd, nt, nt), (Walk.ALL, 0, nt, nt),
                  (Walk.STEP, nd, nd + (nt - nd) // 2, nt), (Walk.ALL, 0, nt, nt), (Walk.DRIVE, 0, nd, nd)]
        got = _walk(FaninStore(p, ell, ws), ranges, random.Random(ell), stall=0.3)
        for rs, (_, lo, hi, _) in zip(got, ranges):
            for k, f, w in rs:
                assert f == rows[k] and w == ws[rows[k]["waddr"]], (name, P, ell, k, f, rows[k])
            assert sorted({k for k, _, _ in rs}) == list(range(lo, hi))


def test_counter_walk_equals_the_rom_walk_cycle_for_cycle():
    """The counter walk and the connection-ROM walk give the same stream, stalls included."""
    p = _params(TOPOLOGIES["skip"](), 2)
    for ell, lane in enumerate(p.layout.lanes):
        ranges = [(Walk.ALL, 0, lane.n_entries, lane.n_entries), (Walk.STEP, lane.n_drive, lane.n_entries,
                                                                 lane.n_entries)]
        a = _walk(FaninStore(p, ell), ranges, random.Random(7), stall=0.5)
        b = _walk(RomFaninStore(p, ell), ranges, random.Random(7), stall=0.5)
        assert a == b


@pytest.mark.parametrize("P,init,store,per_word", [(1, "verilog", None, 1), (2, "verilog", None, 1),
                                                   (1, "host", "fxp-s8/6", 2), (2, "host", "fxp-s4/3", 4),
                                                   (1, "host", "fxp-s6/5", 2), (3, "host", "fxp-s3/2", 4),
                                                   (1, "host", None, 1)])
def test_host_reads_and_writes_the_weights_by_address(P, init, store, per_word):
    """Writes and reads by weight address, also where weights share a word (weight_init =
    "host": 16 bits per word, a write changes only its weight)."""
    p = _params(TOPOLOGIES["skip"](), P, init, store)
    assert p.weights_per_word == per_word
    lane = p.layout.lanes[P - 1]
    fmt = p.num.weight_store
    ws = [fmt.min_raw + (7 * k) % (fmt.max_raw - fmt.min_raw + 1) for k in range(lane.n_words)]
    dut = FaninStore(p, P - 1, ws)
    new = {3: fmt.max_raw, 4: fmt.min_raw, lane.n_words - 1: -1}

    async def bench(ctx):
        for a, v in new.items():
            ctx.set(dut.wr.en, 1), ctx.set(dut.wr.addr, a), ctx.set(dut.wr.data, v)
            await ctx.tick()
        ctx.set(dut.wr.en, 0), ctx.set(dut.host_rd, 1)
        for k in range(lane.n_words):
            ctx.set(dut.host_addr, k)
            await ctx.tick()
            assert ctx.get(dut.weight) == new.get(k, ws[k]), k

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def test_tables_hold_no_word_per_dense_connection():
    """What the walk stores besides the weights: a word per neuron, per dense segment, per sparse
    connection, per hole (and a pad word each), and the sources' lanes (P > 1); for a layered
    network no sparse connection and no hole."""
    for name, P in (("layered-5", 2), ("skip", 3)):
        p = _params(TOPOLOGIES[name](), P)
        for ell, lane in enumerate(p.layout.lanes):
            t = walk_tables(p, ell)
            pr = lane.program
            assert {k: len(rows) for k, (_, rows) in t.items()} == {
                "neurons": len(lane.neurons), "segments": pr.n_seg + 1, "sparse": pr.n_sparse + 1,
                "holes": pr.n_holes + 1, "sources": p.layout.S}
            if name.startswith("layered"):
                assert pr.n_sparse == 0 and pr.n_holes == 0
            else:
                assert pr.n_sparse + pr.n_holes < lane.n_entries // 2
    # the skip topologies exercise holes and sparse entries in both parts and intralayer segments
    for name in ("skip", "skip-p", "skip-5"):
        lay = build_layout(TOPOLOGIES[name](), 2)
        prs = [ln.program for ln in lay.lanes]
        assert sum(q.n_holes_drive for q in prs) > 0 and sum(q.n_holes - q.n_holes_drive for q in prs) > 0
        assert sum(q.n_sparse_drive for q in prs) > 0 and sum(q.n_sparse - q.n_sparse_drive for q in prs) > 0
        assert any(l in segs for (_, l), segs in lay.segments.items())
