"""Each RTL component on its own (amaranth.sim) against the fixed-point model's arithmetic.

The memories a component reads are played by the testbench (data one cycle after the
address, as the lane's synchronous memories give it), so each test drives exactly one
component and checks it against an independent computation: ``FixedNetwork`` for the
arithmetic (§1-§6 of docs/numerics.md), the layout for the connection lists, a hand count for
latencies and schedules. The whole core stays tested in tests/test_rtl.py.
"""

import numpy as np
import pytest
import torch
from amaranth.sim import Simulator

from eqprop.hdl.core import HOST_BUS  # noqa: F401  (the bus the decoder takes)
from eqprop.hdl.driver import AmaranthBus
from eqprop.hdl.enums import Ctrl, LaneMode, Phase, Reg, Region, Status, Walk
from eqprop.hdl.lane import Lane
from eqprop.hdl.params import CoreParams
from eqprop.hdl.units import (
    ArgMax,
    FaninStore,
    HostDecoder,
    HostPort,
    MacPipeline,
    NeuronUnit,
    PhaseController,
    StateBanks,
    UpdateUnit,
    buffer_offset,
)
from eqprop.hdl.units.fanin import entry_rows
from eqprop.model.numerics import Multiplier, numerics_from_mapping
from eqprop.model.settle import SettleRule
from eqprop.model.topology import layer_skipping, layered

I64 = torch.int64
FIXED = {"state": "fxp-u8/7", "weight": "fxp-s8/6", "weight_store": "fxp-s12/10", "bias": 10,
         "rounding": "stochastic", "state_rounding": "stochastic"}


def _params(fixed=FIXED, P=2, beta=1.0, nudge="after-step", rates=(0.5, 0.25, 0.125), seed=0, settle=None):
    topo = layer_skipping([6, 5, 4, 3], n_rewire=6, seed=1)
    p = CoreParams(topo, numerics_from_mapping(fixed), 0.5, beta, list(rates), P, n_free=3, n_nudged=2,
                   nudge=nudge, settle=settle)
    net = p.net.init_params(seed, other=0.6)
    g = torch.Generator().manual_seed(seed + 7)
    net.b = torch.randint(net.num.bias.min_raw // 2, net.num.bias.max_raw // 2, (net.n_s,), generator=g, dtype=I64)
    net._refresh()
    return p, net, g


def _run(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def _states(p, g, n=1):
    return torch.randint(0, p.state.one() + 1, (n, p.layout.S), generator=g, dtype=I64)


def _inputs(p, g):
    return torch.randint(0, p.state.one() + 1, (1, p.layout.n_in), generator=g, dtype=I64)


def _banks_of(p, s):
    """Each lane's states in local order (what bank w of every lane holds)."""
    return [[int(s[0, i]) for i in lane.neurons] for lane in p.layout.lanes]


# ------------------------------------------------------------------ lane
def test_layout_puts_the_drive_entries_first():
    """Every lane's list: the drive entries (input sources) [0, n_drive), then the step entries
    (non-input sources); each neuron of the lane has one run in each part (a dummy where it has
    no source of that kind), first/last mark the runs, and the two parts hold every connection
    of the topology once per end lane (inputs once), besides the holes of the dense segments."""
    for topo in (layer_skipping([6, 5, 4, 3], n_rewire=6, seed=1), layered([6, 5, 4, 3])):
        p = CoreParams(topo, numerics_from_mapping(FIXED), 0.5, 1.0, [0.5], 3, n_free=1, n_nudged=1)
        lay, n_in = p.layout, topo.sizes[0]
        seen = set()
        for lane in lay.lanes:
            assert lane.n_drive + lane.n_step == len(lane.entries)
            for part, want_input in ((lane.drive_entries, True), (lane.step_entries, False)):
                assert all(e.src_input == want_input for e in part)
                assert [e.neuron for e in part if e.first] == lane.neurons  # one run per neuron, in order
                assert [e.neuron for e in part if e.last] == lane.neurons
                for e in part:
                    g = n_in + e.neuron
                    j = e.src if e.src_input else n_in + e.src
                    if e.dummy and e.edge < 0:  # a neuron's dummy: nothing of this kind
                        assert e.first and e.last and not topo.mask[g, :n_in if want_input else slice(n_in, None)].any()
                    elif e.dummy:  # a hole of a dense segment (tests/test_walk.py checks them)
                        assert not topo.mask[g, j]
                    else:
                        assert topo.mask[g, j]
                        seen.add((g, j))
        assert seen == {(int(a), int(b)) for a, b in zip(*np.nonzero(topo.mask)) if a >= n_in}
        assert lay.drive_depth == max(l.n_drive for l in lay.lanes)
        assert lay.step_depth == max(l.n_step for l in lay.lanes)


@pytest.mark.parametrize("walk", list(Walk))
@pytest.mark.parametrize("lane", [0, 1])
def test_fanin_store_holds_the_layout_and_the_weights(lane, walk):
    """The walk covers its range (drive [0, n_drive), step [n_drive, n_total), all) with the
    layout's fields and the stored weights; a written weight is read back by the host."""
    p, net, _ = _params()
    ws = p.lane_weights(net.W_in, net.W_ss)[lane]
    dut = FaninStore(p, lane, ws)
    ln = p.layout.lanes[lane]
    lo, hi = {Walk.DRIVE: (0, ln.n_drive), Walk.STEP: (ln.n_drive, len(ln.entries)),
              Walk.ALL: (0, len(ln.entries))}[walk]
    entries = ln.entries
    lay = p.layout

    async def bench(ctx):
        ctx.set(dut.start, 1), ctx.set(dut.walk, walk)
        await ctx.tick()
        ctx.set(dut.start, 0), ctx.set(dut.advance, 1), ctx.set(dut.walk, Walk.DRIVE)  # read with start only
        for k in range(lo, hi):
            e = entries[k]
            assert ctx.get(dut.pos) == k and ctx.get(dut.last) == (k == hi - 1)
            await ctx.tick()  # LATENCY = 1
            f = ctx.get(dut.entry)
            assert ctx.get(dut.weight) == ws[k]
            assert (f.nloc, f.nidx, f.first, f.last, f.dummy, f.sel_in) == \
                (lay.local[e.neuron], e.neuron, e.first, e.last, e.dummy, e.src_input)
            assert f.saddr == (e.src if e.src_input else lay.local[e.src])
            assert f.out == (e.neuron >= lay.out_first)
        ctx.set(dut.advance, 0)
        ctx.set(dut.wr.en, 1), ctx.set(dut.wr.addr, 1), ctx.set(dut.wr.data, -5)
        await ctx.tick()
        ctx.set(dut.wr.en, 0), ctx.set(dut.host_rd, 1), ctx.set(dut.host_addr, 1)
        await ctx.tick()
        assert ctx.get(dut.weight) == -5
    _run(dut, bench)


@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_components_check_their_parameters():
    p, net, _ = _params()
    ws = p.lane_weights(net.W_in, net.W_ss)
    with pytest.raises(ValueError, match="lane 0 weights: 3 values given, the lane has"):
        FaninStore(p, 0, [0, 0, 0])
    with pytest.raises(ValueError, match=r"lane 1 weights\[0\]: 4096 is not a raw integer of fxp-s12/10"):
        Lane(p, 1, [4096] + ws[1][1:])
    with pytest.raises(ValueError, match=r"lane 0 biases: 1 values given"):
        Lane(p, 0, ws[0], [0])
    with pytest.raises(ValueError, match=r"lane: index must be an integer in \[0, 2\), not 2"):
        MacPipeline(p, 2)
    with pytest.raises(ValueError, match="seed: 4294967296 is not a 32-bit unsigned integer"):
        from eqprop.hdl.rng import RandomWord

        RandomWord(1 << 32)
    with pytest.raises(ValueError, match="stages: 13 is not in"):
        RandomWord(1, stages=13)
    big = CoreParams(p.topology, p.num, 0.5, 1.0, [0.5], 2, n_free=1 << 16, n_nudged=2)
    for unit in (PhaseController, HostDecoder):
        with pytest.raises(ValueError, match="n_free: 65536 does not fit the 16-bit step registers"):
            unit(big)
    with pytest.raises(ValueError, match="buf: 3 is not a state buffer"):
        buffer_offset(3, 4)
    with pytest.raises(ValueError, match="lane_weights: 1 lanes given, the core has 2"):
        from eqprop.hdl.core import Core

        Core(p, ws[:1])


def test_state_banks_read_what_was_written_in_each_buffer():
    p, _, g = _params()
    dut = StateBanks(p, 1)
    sizes = [len(lane.neurons) for lane in p.layout.lanes]
    mem = {(w, b, i): int(torch.randint(0, 256, (1,), generator=g)) for w, n in enumerate(sizes)
           for b in range(3) for i in range(n)}

    async def bench(ctx):
        for (w, b, i), v in mem.items():
            wr = dut.write[w]
            ctx.set(wr.en, 1), ctx.set(wr.addr, buffer_offset(b, sizes[w]) + i), ctx.set(wr.data, v)
            await ctx.tick()
            ctx.set(wr.en, 0)
        for b in range(3):
            for i in range(max(sizes)):
                ctx.set(dut.src_buf, b), ctx.set(dut.src_loc, i), ctx.set(dut.own_buf, b), ctx.set(dut.own_loc, i)
                await ctx.tick()
                for w, n in enumerate(sizes):
                    if i < n:
                        assert ctx.get(dut.src_data[w]) == mem[(w, b, i)]
                if i < sizes[1]:
                    assert ctx.get(dut.own_data) == mem[(1, b, i)]

    _run(dut, bench)


@pytest.mark.parametrize("part", ["drive", "step"])
@pytest.mark.parametrize("lane", [0, 1])
def test_mac_pipeline_sums_equal_the_model(lane, part):
    """Every neuron's sum (§2 without the bias, MAC weights sat(W >> (fWs - fW)) of §1) over
    the drive entries equals x Wm_in of the model, over the step entries s Wm_ss, the last one
    MAC latency after its issue."""
    p, net, g = _params()
    ln = p.layout.lanes[lane]
    lo, hi = (0, ln.n_drive) if part == "drive" else (ln.n_drive, len(ln.entries))
    rows, ws = entry_rows(p, lane), p.lane_weights(net.W_in, net.W_ss)[lane]
    dut = MacPipeline(p, lane)
    s, x = _states(p, g), _inputs(p, g)
    banks = _banks_of(p, s)
    want = (x @ net.Wm_in if part == "drive" else s @ net.Wm_ss)[0]
    got, n = {}, hi - lo

    async def bench(ctx):
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        src, pos = 0, lo  # the FaninStore's walk, restarted by the start at the range's first entry
        for cycle in range(1, n + 20):
            ctx.set(dut.last, pos == hi - 1)
            ea = pos
            pos += ctx.get(dut.advance)
            await ctx.tick()
            # the memories: the entry and weight, the source one cycle after its address
            ctx.set(dut.x_data, int(x[0, src]) if src < p.layout.n_in else 0)
            for w, bank in enumerate(banks):
                ctx.set(dut.bank_data[w], bank[src] if src < len(bank) else 0)
            if ea < hi:  # (the MAC takes the stored weight's top bits, W >> (fWs - fW))
                ctx.set(dut.entry, rows[ea]), ctx.set(dut.weight, ws[ea] >> p.mac_shift)
            src = ctx.get(dut.src_loc)
            if ctx.get(dut.sum.valid):
                got[ctx.get(dut.sum.idx)] = (ctx.get(dut.sum.acc), cycle + 1)
        assert not ctx.get(dut.busy)

    _run(dut, bench)
    assert {i: a for i, (a, _) in got.items()} == {i: int(want[i]) for i in ln.neurons}
    assert max(c for _, c in got.values()) == n + MacPipeline.LATENCY


@pytest.mark.parametrize("nudge", ["eq5", "after-step"])
@pytest.mark.parametrize("beta", [1.0, -0.5])
@pytest.mark.parametrize("acc,overflow", [(0, None), (14, "saturate"), (14, "wrap")])
def test_neuron_unit_equals_the_model_step(nudge, beta, acc, overflow):
    """The new state of every neuron (§4: the step's sum plus the drive D_i, the overflow
    policy on the whole sum, eq. 5, the nudge, stochastic rounding with the events of §5,
    clip) equals FixedNetwork.step with D_i + the sum as its net input, and the settle flag
    says whether any state moved by more than settle_tol (§4a)."""
    fixed = dict(FIXED, acc=acc, acc_overflow=overflow) if acc else FIXED
    p, net, g = _params(fixed, P=1, beta=beta, nudge=nudge)  # one lane: local index = neuron index
    dut = NeuronUnit(p)
    S, ev_base, tol = p.layout.S, 123456, 2
    s = _states(p, g)
    q = 1 << (p.acc_exact_bits - 3)
    sums = torch.randint(-q, q, (1, S), generator=g, dtype=I64)  # the step entries' sums
    D = torch.randint(-q, q, (1, S), generator=g, dtype=I64) + (net.b << p.bias_align)  # the drive words
    label = 1
    target = torch.zeros(1, net.n_out, dtype=I64)
    target[0, label] = p.state.one()
    net.W_in.zero_(), net.W_ss.zero_()
    net._refresh()
    sign = 1 if beta > 0 else -1
    want = net.step(s, sums + D, sign, target, ev_base + torch.arange(S)[None, :])[0]
    got = {}

    async def bench(ctx):
        ctx.set(dut.nudge, 1), ctx.set(dut.beta_neg, beta < 0), ctx.set(dut.ev_base, ev_base)
        ctx.set(dut.settle_tol, tol)
        ctx.set(dut.clear, 1)
        await ctx.tick()
        ctx.set(dut.clear, 0)
        valid_at = {}
        for cycle in range(S + 8):
            i = cycle if cycle < S else None
            sm = dut.sum
            ctx.set(sm.valid, i is not None)
            if i is not None:
                ctx.set(sm.acc, int(sums[0, i])), ctx.set(sm.loc, i), ctx.set(sm.idx, i)
                ctx.set(sm.out, i >= p.layout.out_first)
                valid_at[i] = cycle
            loc = ctx.get(dut.rd_loc)
            await ctx.tick()
            if i is not None:  # the drive, old state and target of rd_loc, one cycle later
                ctx.set(dut.drive, int(D[0, loc])), ctx.set(dut.state, int(s[0, loc]))
                ctx.set(dut.target, loc - p.layout.out_first == label)
            assert not ctx.get(dut.drive_wr.en)
            if ctx.get(dut.result.en):
                k = ctx.get(dut.result.addr)
                got[k] = ctx.get(dut.result.data)
                assert cycle + 1 - valid_at[k] == NeuronUnit.LATENCY - 1  # written at the next edge
        assert ctx.get(dut.moved) == bool(((want - s[0]).abs() > tol).any())

    _run(dut, bench)
    assert got == {i: int(want[i]) for i in range(S)}


def test_neuron_unit_drive_pass_writes_the_inputs_part_and_the_bias():
    """In the drive pass the unit writes D_i = the sum (the drive entries') + (b_i << (fa - fB))
    (§2, exact) on ``drive_wr``, DRIVE_LATENCY after ``sum.valid``, and no state."""
    p, net, g = _params(P=1)
    dut = NeuronUnit(p)
    S = p.layout.S
    q = 1 << (p.acc_exact_bits - 3)
    sums = torch.randint(-q, q, (S,), generator=g, dtype=I64)
    got = {}

    async def bench(ctx):
        ctx.set(dut.drive_pass, 1)
        valid_at = {}
        for cycle in range(S + 6):
            i = cycle if cycle < S else None
            ctx.set(dut.sum.valid, i is not None)
            if i is not None:
                ctx.set(dut.sum.acc, int(sums[i])), ctx.set(dut.sum.loc, i), ctx.set(dut.sum.idx, i)
                valid_at[i] = cycle
            loc = ctx.get(dut.rd_loc)
            await ctx.tick()
            if i is not None:
                ctx.set(dut.bias, int(net.b[loc]))
            assert not ctx.get(dut.result.en)
            if ctx.get(dut.drive_wr.en):
                k = ctx.get(dut.drive_wr.addr)
                got[k] = ctx.get(dut.drive_wr.data)
                assert cycle + 1 - valid_at[k] == NeuronUnit.DRIVE_LATENCY - 1  # written at the next edge
        assert not ctx.get(dut.busy)

    _run(dut, bench)
    assert got == {i: int(sums[i]) + (int(net.b[i]) << p.bias_align) for i in range(S)}


@pytest.mark.parametrize("lane", [0, 1])
@pytest.mark.parametrize("fixed", [FIXED, dict(FIXED, rounding="nearest-even", state_rounding="nearest-even",
                                                acc=12, acc_overflow="wrap")])
def test_lane_drive_pass_then_steps_over_the_step_entries(lane, fixed):
    """A lane's drive pass writes D_i = sum over inputs of sat(W >> (fWs - fW)) x_j +
    (b_i << (fa - fB)) into its drive memory (computed here in numpy, and equal to
    FixedNetwork.input_drive) in n_drive + MAC latency + DRIVE_LATENCY cycles; a relaxation
    step then walks only the step entries (n_step + MAC latency + NEURON_LATENCY cycles) and
    its new states equal FixedNetwork.step with that drive, although the inputs were
    overwritten after the drive pass (the step reads none)."""
    p, net, g = _params(fixed)
    ln = p.layout.lanes[lane]
    dut = Lane(p, lane, p.lane_weights(net.W_in, net.W_ss)[lane], p.lane_biases(net.b)[lane])
    s, x = _states(p, g), _inputs(p, g)
    x2 = p.state.one() - x  # other inputs, written after the drive pass
    W = p.num.weight
    Wm_in = np.clip(net.W_in.numpy() >> p.mac_shift, W.min_raw, W.max_raw)
    D_np = x.numpy().astype(np.int64) @ Wm_in + (net.b.numpy() << p.bias_align)
    drive = net.input_drive(x)
    assert D_np.tolist() == drive.tolist()
    ev_base = 777
    want = net.step(s, drive, 0, None, ev_base + torch.arange(p.layout.S)[None, :])[0]
    got, cycles = {}, {}

    async def host_write(ctx, region, addr, data, sel=0):
        h = dut.host
        ctx.set(h.region, region), ctx.set(h.sel, sel), ctx.set(h.buf, 0), ctx.set(h.addr, addr)
        ctx.set(h.wdata, data), ctx.set(h.we, 1)
        await ctx.tick()
        ctx.set(h.we, 0)

    async def run(ctx, mode, name):
        c = dut.ctrl
        ctx.set(c.mode, mode), ctx.set(c.rd_buf, 0), ctx.set(c.wr_buf, 1), ctx.set(c.ev_base, ev_base)
        ctx.set(c.start, 1)
        await ctx.tick()
        ctx.set(c.start, 0)
        await ctx.tick()  # the lane's own start, a cycle later (Lane.START_LATENCY)
        n = 1  # the start cycle
        while ctx.get(dut.busy):
            if ctx.get(dut.result.en):
                got[ctx.get(dut.result.addr) - buffer_offset(1, len(ln.neurons))] = ctx.get(dut.result.data)
            await ctx.tick()
            n += 1
        cycles[name] = n

    async def bench(ctx):
        for j in range(p.layout.n_in):
            await host_write(ctx, Region.INPUT, j, int(x[0, j]))
        for w, other in enumerate(p.layout.lanes):
            for k, i in enumerate(other.neurons):
                await host_write(ctx, Region.STATE, k, int(s[0, i]), sel=w)
        await run(ctx, LaneMode.DRIVE, "drive")
        assert not got  # the drive pass writes no state
        for k, i in enumerate(ln.neurons):
            assert ctx.get(dut.drive_data[k]) == int(D_np[0, i])
        for j in range(p.layout.n_in):
            await host_write(ctx, Region.INPUT, j, int(x2[0, j]))
        await run(ctx, LaneMode.RELAX, "step")

    _run(dut, bench)
    assert got == {k: int(want[i]) for k, i in enumerate(ln.neurons)}
    # from the start pulse to the last write: the walk, the MAC pipeline, the neuron unit
    assert cycles == {"drive": ln.n_drive + MacPipeline.LATENCY + NeuronUnit.DRIVE_LATENCY,
                      "step": ln.n_step + MacPipeline.LATENCY + NeuronUnit.LATENCY}


@pytest.mark.parametrize("lane", [0, 1])
@pytest.mark.parametrize("rounding,host_rates", [("stochastic", False), ("nearest-even", False),
                                                 ("stochastic", True)])
def test_update_unit_equals_the_model_learn(lane, rounding, host_rates):
    """Every stored weight and bias the unit writes back equals FixedNetwork.learn (batch 1,
    §6: sigma D M, rounding at the pair's shift with the events of §5, saturation), in
    4 cycles per entry (pipelined; a hole, a dummy too; each weight written
    ``WRITE_LATENCY`` cycles after the walk reached its entry), 2 to drain and 9 per bias;
    ``host_rates``: with the ``rate`` inputs (the core's
    rate registers) set to other multipliers than the design's, a quarter to three quarters
    of each pair's, and the model's multipliers set to the same."""
    p, net, g = _params(dict(FIXED, rounding=rounding), beta=-1.0)
    if host_rates:
        for q, pair in enumerate(p.layout.pairs):
            mu = net.mult[pair]
            net.mult[pair] = Multiplier(mu.M * (q % 3 + 1) // 4, mu.E)
    rates = p.rate_reset()  # the model's M (the design's, or the host's above)
    rows, ws = entry_rows(p, lane), p.lane_weights(net.W_in, net.W_ss)[lane]
    dut = UpdateUnit(p, lane)
    s0, sb, x = _states(p, g), _states(p, g), _inputs(p, g)
    bufs = {0: _banks_of(p, s0), 1: _banks_of(p, sb)}
    own = p.layout.lanes[lane].neurons
    b_lane = [int(net.b[i]) for i in own]
    upd_no = 5
    net.learn(x, s0, sb, -1.0, upd_no)
    want_w = p.lane_weights(net.W_in, net.W_ss)[lane]
    want_b = [int(net.b[i]) for i in own]
    got_w, got_b = list(ws), list(b_lane)
    writer = {r["waddr"]: k for k, r in enumerate(rows) if not (r["dummy"] or r["mirror"])}
    latencies = set()

    async def bench(ctx):
        ctx.set(dut.beta_neg, 1), ctx.set(dut.ev_base, upd_no * net.events_per_update)
        for q, M in enumerate(rates):
            ctx.set(dut.rate[q], M)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        cycles, pos = 0, 0  # the FaninStore's walk, restarted by the start
        reached = {}  # entry -> the cycle the walk reached it (its ph 0)
        while ctx.get(dut.busy):
            reached.setdefault(pos, cycles)
            if ctx.get(dut.w_wr.en):  # written WRITE_LATENCY cycles after the walk reached the entry
                latencies.add(cycles - reached[writer[ctx.get(dut.w_wr.addr)]])
            ctx.set(dut.pos, pos), ctx.set(dut.last, pos == len(rows) - 1)
            # (the source's index: the entry's saddr, as the lane reads it)
            ea, sb_, src, o, bl = pos, *(ctx.get(v) for v in (dut.rd.sb, dut.entry.saddr, dut.rd.own, dut.bias_addr))
            for wr, mem in ((dut.w_wr, got_w), (dut.b_wr, got_b)):
                if ctx.get(wr.en):
                    mem[ctx.get(wr.addr)] = ctx.get(wr.data)
            pos += ctx.get(dut.advance)
            await ctx.tick()
            cycles += 1
            if ea < len(rows):
                ctx.set(dut.entry, rows[ea]), ctx.set(dut.weight, ws[ea])
            ctx.set(dut.x_data, int(x[0, src]) if src < p.layout.n_in else 0)
            for w, bank in enumerate(bufs[sb_]):
                ctx.set(dut.bank_data[w], bank[src] if src < len(bank) else 0)
            ctx.set(dut.own_data, bufs[sb_][lane][o] if o < len(own) else 0)
            ctx.set(dut.bias, b_lane[bl] if bl < len(own) else 0)
        idle = sum(1 for r in rows if r["dummy"] or r["mirror"])
        assert 0 < idle < len(rows)
        assert cycles == (UpdateUnit.CYCLES_PER_ENTRY * len(rows)
                          + UpdateUnit.DRAIN_CYCLES + UpdateUnit.CYCLES_PER_BIAS * len(own))

    _run(dut, bench)
    assert got_w == want_w and got_b == want_b
    assert latencies == {UpdateUnit.WRITE_LATENCY}


def test_host_port_routes_writes_and_reads():
    p, _, _ = _params()
    dut = HostPort(p, 1)
    sizes = [len(lane.neurons) for lane in p.layout.lanes]

    async def bench(ctx):
        h = dut.host
        ports = {Region.WEIGHT: dut.weight_wr, Region.BIAS: dut.bias_wr, Region.TARGET: dut.target_wr,
                 Region.INPUT: dut.input_wr}
        ctx.set(dut.idle, 1)
        for region in Region:
            for sel in (0, 1):
                ctx.set(h.region, region), ctx.set(h.sel, sel), ctx.set(h.addr, 2), ctx.set(h.buf, 2)
                ctx.set(h.wdata, 77), ctx.set(h.we, 1)
                await ctx.tick()  # (the access is registered)
                for r, port in ports.items():
                    mine = r == region and (sel == 1 or r == Region.INPUT)
                    assert ctx.get(port.en) == mine and ctx.get(port.addr) == 2
                for w in (0, 1):
                    st = dut.state_wr[w]
                    assert ctx.get(st.en) == (region == Region.STATE and sel == w)
                    assert ctx.get(st.addr) == buffer_offset(2, sizes[w]) + 2
                ctx.set(h.we, 0)
                await ctx.tick()
                assert not any(ctx.get(port.en) for port in ports.values())
        # an access while the lane is not idle is not taken
        ctx.set(dut.idle, 0), ctx.set(h.region, Region.WEIGHT), ctx.set(h.sel, 1), ctx.set(h.we, 1)
        await ctx.tick()
        assert not ctx.get(dut.weight_wr.en)
        ctx.set(dut.idle, 1), ctx.set(h.we, 0)
        ctx.set(dut.weight, -3), ctx.set(dut.bias, -7), ctx.set(dut.bank_data[0], 11), ctx.set(dut.bank_data[1], 22)
        for region, sel, want in ((Region.WEIGHT, 1, -3), (Region.BIAS, 1, -7), (Region.S0, 0, 11),
                                  (Region.FINAL, 1, 22), (Region.REG, 0, 0)):
            ctx.set(h.region, region), ctx.set(h.sel, sel)
            await ctx.tick()
            ctx.set(h.region, Region.REG)  # rdata holds the word of the region four cycles before
            for _ in range(2):
                await ctx.tick()
                assert ctx.get(h.rdata) != want & 0xFFFFFFFF or want == 0  # (not yet)
            await ctx.tick()
            assert ctx.get(h.rdata) == want & 0xFFFFFFFF

    _run(dut, bench)


# ------------------------------------------------------------------ core
def test_host_decoder_registers_status_and_irq():
    p, _, _ = _params(settle=SettleRule(1, 2))
    dut = HostDecoder(p)

    async def bench(ctx):
        bus = AmaranthBus(ctx, dut.bus)
        addr = lambda r: (Region.REG.value << 20) | r.value  # noqa: E731
        assert await bus.read(addr(Reg.N_FREE)) == 3 and await bus.read(addr(Reg.SETTLE_STEPS)) == 2
        for k, reg in enumerate((Reg.EXAMPLE, Reg.UPDATE, Reg.N_NUDGED, Reg.SETTLE_TOL)):
            await bus.write(addr(reg), 40 + k)
            assert await bus.read(addr(reg)) == 40 + k
        ctx.set(dut.cycles_total, 999)
        assert await bus.read(addr(Reg.CYCLES_TOTAL)) == 999
        # the start command: one cycle, registered (the cycle after the write), with the inference bit
        ctx.set(dut.bus.addr, addr(Reg.CTRL)), ctx.set(dut.bus.wdata, (Ctrl.START | Ctrl.INFER).value)
        ctx.set(dut.bus.we, 1)
        assert not ctx.get(dut.start)
        await ctx.tick()
        assert ctx.get(dut.start) and ctx.get(dut.infer)
        await ctx.tick()  # the same write again, while the first start is on its way
        assert not ctx.get(dut.start)  # ignored while busy ...
        ctx.set(dut.bus.we, 0), ctx.set(dut.busy, 1)
        st = Status(await bus.read(addr(Reg.STATUS)))
        assert st == Status.BUSY | Status.WR_ERR  # ... and flagged
        await bus.write(addr(Reg.EXAMPLE), 1)  # dropped while busy
        ctx.set(dut.busy, 0), ctx.set(dut.done, 1)
        await ctx.tick()
        assert ctx.get(dut.irq)
        assert await bus.read(addr(Reg.EXAMPLE)) == 40
        assert ctx.get(dut.irq)  # the example read does not clear it ...
        assert Status(await bus.read(addr(Reg.STATUS))) == Status.DONE | Status.WR_ERR
        await ctx.tick()
        assert not ctx.get(dut.irq)  # ... a status read does
        await bus.write(addr(Reg.STATUS), Status.WR_ERR.value)
        assert Status.finished(await bus.read(addr(Reg.STATUS)))
        assert await bus.read(addr(Reg.STATUS)) == Status.DONE.value

    _run(dut, bench)


@pytest.mark.parametrize("infer", [False, True])
def test_phase_controller_schedule(infer):
    """Against a hand count of one example: the buffers, event bases and phases of every
    launch, the settle rule ending the free phase (§4a, §5), and the cycle counters."""
    p, _, _ = _params()
    dut = PhaseController(p)
    S, busy_len = p.layout.S, 5
    moved = [1, 0, 0, 1]  # the lanes' moved flag after each free step
    launches = []

    async def bench(ctx):
        for k, v in (("example", 2), ("update", 3), ("n_free", 6), ("n_nudged", 2), ("settle_steps", 2)):
            ctx.set(getattr(dut, k), v)
        await ctx.tick()  # (``example`` is there a cycle before the start, as the decoder's register is)
        ctx.set(dut.start, 1), ctx.set(dut.infer, infer)
        await ctx.tick()
        ctx.set(dut.start, 0)
        busy, free_done = 0, 0
        for _ in range(200):
            c = dut.lanes
            if ctx.get(c.start):
                launches.append((ctx.get(dut.phase), ctx.get(c.mode), ctx.get(c.rd_buf), ctx.get(c.wr_buf),
                                 ctx.get(c.ev_base)))
                busy = busy_len
            ctx.set(dut.argmax_done, ctx.get(dut.phase) == Phase.ARGMAX)
            await ctx.tick()
            ctx.set(dut.lanes_busy, busy > 0)
            if busy == 1 and ctx.get(dut.phase) == Phase.FREE:
                ctx.set(dut.lanes_moved, moved[free_done])
                free_done += 1
            busy = max(busy - 1, 0)
            if ctx.get(dut.done):
                break
        assert not ctx.get(dut.busy) and ctx.get(dut.free_steps) == 3
        step = busy_len + 3  # busy, then the launch cycle, the registered busy and the done detection
        assert ctx.get(dut.cycles_free) == 3 * step

    _run(dut, bench)
    F, N, U = Phase.FREE, Phase.NUDGED, Phase.UPDATE
    R, W = LaneMode.RELAX, LaneMode.UPDATE
    # the example stride and the weakly-clamped phase's events use the design's n_free (3) and
    # n_nudged (2), not the registers' (§5)
    stride = 3 * S if infer else 5 * S
    # the drive pass first (§2), training and inference
    want = [(Phase.DRIVE, LaneMode.DRIVE, 0, 1, 2 * stride),
            (F, R, 0, 1, 2 * stride), (F, R, 1, 0, 2 * stride + S), (F, R, 0, 1, 2 * stride + 2 * S)]
    if not infer:  # s^0 in buffer 1; the weakly-clamped phase alternates 2 and 0
        want += [(N, R, 1, 2, 2 * stride + 3 * S), (N, R, 2, 0, 2 * stride + 4 * S),
                 (U, W, 2, 0, 3 * (p.layout.n_slots + S))]
    assert launches == want


def test_argmax_first_of_equal_maxima():
    p, _, g = _params()
    dut = ArgMax(p)
    lay = p.layout
    s0 = _states(p, g)[0]
    s0[lay.out_first:] = torch.tensor([50, 90, 90])
    banks = _banks_of(p, s0[None])

    async def bench(ctx):
        ctx.set(dut.run, 1), ctx.set(dut.s0_buf, 1)
        # the words read one to three cycles before (a lane answers four cycles after the
        # address: its registered access, the memory, the HostPort's two registers)
        pending = [0, 0, 0]
        for cycle in range(dut.CYCLES):
            lane = dut.lane
            assert ctx.get(lane.region) == Region.S0 and ctx.get(lane.buf) == 1 and not ctx.get(lane.we)
            w, loc = ctx.get(lane.sel), ctx.get(lane.addr)
            assert ctx.get(dut.done) == (cycle == dut.CYCLES - 1)
            await ctx.tick()
            ctx.set(lane.rdata, pending.pop(0))
            pending.append(banks[w][loc] if loc < len(banks[w]) else 0)
        ctx.set(dut.run, 0)
        assert ctx.get(dut.pred) == 1

    _run(dut, bench)


def test_const_mul_is_the_product_modulo_2n():
    """arith.const_mul (the controller's event bases, no DSP): x c mod 2^n against Python's
    product, for strides with one, several and subtracted NAF digits; the digits themselves
    sum to c with no two adjacent."""
    from amaranth.hdl import Module, Signal

    from eqprop.hdl.arith import const_mul, naf_digits

    rng = np.random.default_rng(3)
    for c in (1, 7, 12345, 6853, 2**31 - 1, 3 * 2**33):
        digits = naf_digits(c)
        assert sum(d << k for k, d in digits) == c
        assert all(b - a >= 2 for (a, _), (b, _) in zip(digits, digits[1:]))
    for c, n in ((0, 32), (64, 32), (432, 32), (6853, 32), (2**31 - 1, 32), (1000, 12)):
        x, y = Signal(32), Signal(n)
        m = Module()
        m.d.comb += y.eq(const_mul(x, c, n))
        vals = [0, 1, 2**32 - 1] + [int(v) for v in rng.integers(0, 2**32, 20, dtype=np.uint64)]

        async def bench(ctx):
            for v in vals:
                ctx.set(x, v)
                assert ctx.get(y) == (v * c) % 2**n, (c, n, v)

        sim = Simulator(m)
        sim.add_testbench(bench)
        sim.run()


def test_serial_wrapper_frames_a_write_and_a_read():
    """SerialCore (the pin-light top that place and route builds): a 58-bit frame {we, re,
    addr, wdata} shifted in MSB first and latched writes a register; a read frame's word comes
    back MSB first on ``so`` after rvalid."""
    from eqprop.hdl.core import Core
    from eqprop.hdl.enums import REGION_SHIFT
    from eqprop.hdl.serial import FRAME_BITS, SerialCore
    from eqprop.hdl.units.decoder import READ_LATENCY

    p, _, _ = _params()
    dut = SerialCore(Core(p))

    async def frame(ctx, we, re, addr, wdata):
        word = (we << (FRAME_BITS - 1)) | (re << (FRAME_BITS - 2)) | (addr << 32) | wdata
        for k in reversed(range(FRAME_BITS)):
            ctx.set(dut.si, (word >> k) & 1)
            await ctx.tick()
        ctx.set(dut.latch, 1)
        ctx.set(dut.si, 0)  # the next frame's first bit shifts in during the latch
        await ctx.tick()
        ctx.set(dut.latch, 0)

    async def bench(ctx):
        reg = (0 << REGION_SHIFT) | Reg.N_FREE.value
        await frame(ctx, 1, 0, reg, 0xBEEF)
        await frame(ctx, 0, 1, reg, 0)
        # rvalid loads ``out`` READ_LATENCY + 1 cycles after the latch, then one bit per cycle
        for _ in range(READ_LATENCY + 1):
            await ctx.tick()
        bits = []
        for _ in range(32):
            bits.append(ctx.get(dut.so))
            await ctx.tick()
        assert int("".join(map(str, bits)), 2) == 0xBEEF

    _run(dut, bench)
