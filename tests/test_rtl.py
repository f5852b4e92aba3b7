"""The Amaranth RTL against the fixed-point model, bit for bit (amaranth.sim)."""

import copy

import pytest
import torch
from amaranth.hdl import Module, Signal, signed
from amaranth.sim import Simulator

from eqprop.hdl.arith import round_shift, saturate
from eqprop.hdl.core import Core, cycle_model, example_cycles
from eqprop.hdl.driver import AmaranthBus, CoreDriver
from eqprop.hdl.params import CoreParams
from eqprop.hdl.rng import RandomWord
from eqprop.model.golden import GoldenNetwork
from eqprop.model.numerics import Format, numerics_from_mapping, random_words, shift_round
from eqprop.model.settle import SettleRule
from eqprop.model.topology import layer_skipping, layered

I64 = torch.int64


def _run_comb(build, inputs: dict, outputs: list, vectors: list[dict]) -> list[dict]:
    """Evaluate a combinational module on input vectors in amaranth.sim."""
    m = build()
    res = []

    async def tb(ctx):
        for vec in vectors:
            for k, v in vec.items():
                ctx.set(inputs[k], v)
            res.append({o.name: ctx.get(o) for o in outputs})

    sim = Simulator(m)
    sim.add_testbench(tb)
    sim.run()
    return res


@pytest.mark.parametrize("mode", ["floor", "nearest-even", "stochastic"])
@pytest.mark.parametrize("d", [1, 3, 9, 31, 32, 35])
def test_round_shift_unit_equals_model(mode, d):
    v = Signal(signed(48), name="v")
    word = Signal(32, name="word")
    out = Signal(signed(48), name="out")

    def build():
        m = Module()
        m.d.comb += out.eq(round_shift(v, d, mode, word))
        return m

    g = torch.Generator().manual_seed(d)
    vals = torch.randint(-(2**40), 2**40, (300,), generator=g, dtype=I64)
    vals[:4] = torch.tensor([-(1 << d) // 2, (1 << d) // 2, 3 << max(d - 1, 0), -(3 << max(d - 1, 0))])
    words = random_words(0xACE1, torch.arange(300, dtype=I64))
    got = _run_comb(build, {"v": v, "word": word}, [out],
                    [{"v": int(a), "word": int(w)} for a, w in zip(vals, words)])
    ref = shift_round(vals, d, mode, words)
    assert [r["out"] for r in got] == ref.tolist()


def test_saturate_unit():
    fmt = Format(True, 8, 6)
    v = Signal(signed(16), name="v")
    out = Signal(signed(16), name="out")

    def build():
        m = Module()
        m.d.comb += out.eq(saturate(v, fmt))
        return m

    vals = [-1000, -129, -128, -1, 0, 127, 128, 1000]
    got = [r["out"] for r in _run_comb(build, {"v": v}, [out], [{"v": a} for a in vals])]
    assert got == [-128, -128, -128, -1, 0, 127, 127, 127]


@pytest.mark.parametrize("signed_v,fmt", [(True, Format(True, 4, 2)), (False, Format(True, 4, 2)),
                                          (True, Format(False, 4, 2)), (True, Format(True, 7, 3))])
def test_saturate_unit_every_value(signed_v, fmt):
    """Every value of a 7-bit v (the in-range test of a signed v wider than a signed format
    compares its top bits, arith.saturate)."""
    v = Signal(signed(7) if signed_v else 7, name="v")
    out = Signal(signed(8), name="out")

    def build():
        m = Module()
        m.d.comb += out.eq(saturate(v, fmt))
        return m

    vals = range(-64, 64) if signed_v else range(128)
    got = [r["out"] for r in _run_comb(build, {"v": v}, [out], [{"v": a} for a in vals])]
    assert got == [min(max(a, fmt.min_raw), fmt.max_raw) for a in vals]


@pytest.mark.parametrize("bits,stages", [(32, 2), (28, 2), (7, 2), (1, 2), (32, 1), (7, 3), (32, 3), (5, 4),
                                         (32, 12)])
def test_random_word_unit_equals_model(bits, stages):
    """The word, or its top ``bits`` bits (RandomWord computes only the bits they need), in
    ``stages`` pipeline stages (LATENCY = stages)."""
    dut = RandomWord(0x5EED, bits, stages)
    assert dut.LATENCY == stages
    idx = [0, 1, 2, 12345, 2**31 + 7, 2**32 - 1] + list(range(100, 140))
    out = []

    async def tb(ctx):
        for e in idx + [0] * stages:
            ctx.set(dut.index, e)
            await ctx.tick()
            out.append(ctx.get(dut.word))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    # the word of index e appears LATENCY ticks later
    got = out[dut.LATENCY - 1: dut.LATENCY - 1 + len(idx)]
    assert got == (random_words(0x5EED, torch.tensor(idx, dtype=I64)) >> (32 - bits)).tolist()


# ------------------------------------------------------------ whole core
def _setup(topo, fixed, P, n_free, n_nudged, rates=(0.5,), beta=1.0, seed=0, nudge="eq5", settle=None,
           weight_init="verilog"):
    num = numerics_from_mapping(fixed)
    params = CoreParams(topo, num, 0.5, beta, list(rates), P, n_free=n_free, n_nudged=n_nudged, nudge=nudge,
                        settle=settle, weight_init=weight_init)
    net = params.net.init_params(seed, other=0.3)
    g = torch.Generator().manual_seed(seed + 1)
    lo, hi = num.bias.min_raw // 8, num.bias.max_raw // 8
    net.b = torch.randint(lo, hi, (net.n_s,), generator=g, dtype=I64)
    net._refresh()
    return params, net, g


def _simulate(params, body, sleep=False):
    """Run ``body(driver, out)`` against the core; ``sleep``: the driver sleeps through each
    example (its cocotb way, ``tick``) instead of polling every cycle."""
    core = Core(params)
    out = {}

    async def tb(ctx):
        bus = AmaranthBus(ctx, core.bus)

        async def tick(n):
            await ctx.tick().repeat(n)

        drv = CoreDriver(params, bus.write, bus.read, tick if sleep else None)
        await body(drv, out)

    sim = Simulator(core)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return out


def _train_on_chip(params, start, examples, sleep=False) -> list:
    """Load the parameters ``start`` (W_in, W_ss, b), then train on ``examples`` (dicts with
    x, s_init, target, beta) one after another; (ExampleResult, (weights, biases)) each."""

    async def body(drv, out):
        await drv.load_params(*start)
        out["runs"] = []
        for e, ex in enumerate(examples):
            await drv.load_example(ex["x"], ex["s_init"], ex["target"])
            r = await drv.run(False, example=e, update=e, beta_neg=ex["beta"] < 0)
            out["runs"].append((r, await drv.read_params()))

    return _simulate(params, body, sleep)["runs"]


TOPOS = {
    "layered": lambda: layered([6, 5, 4, 3]),
    "skip": lambda: layer_skipping([6, 5, 4, 3], n_rewire=6, seed=1),
    "skip-add": lambda: layer_skipping([5, 4, 4, 3], n_rewire=5, mode="add", seed=2),
}


@pytest.mark.parametrize("topo_name,P,rounding,nudge,init", [
    ("layered", 1, "nearest-even", "after-step", "verilog"),
    ("skip", 1, "stochastic", "after-step", "host"),
    ("skip-add", 1, "floor", "eq5", "verilog"),
    ("skip", 2, "stochastic", "after-step", "verilog"),
    ("skip", 2, "stochastic", "eq5", "verilog"),
    ("skip", 3, "floor", "eq5", "verilog"),
    ("skip-add", 4, "stochastic", "eq5", "verilog"),
    ("layered", 2, "floor", "after-step", "host"),
])
def test_core_trains_a_sequence_bit_exact(topo_name, P, rounding, nudge, init):
    """Three training examples on chip: every state after each phase, every weight and
    bias after each update, equal to FixedNetwork (batch 1); cycles equal the model. At
    P = 1 each weight is stored once (hdl/layout.py); under weight_init = "host" the 8-bit
    stored weights share 16-bit words (the SPRAM's), loaded by the host."""
    fixed = {"state": 8, "weight": 8, "bias": 12, "rounding": rounding}
    params, net, g = _setup(TOPOS[topo_name](), fixed, P, n_free=5, n_nudged=3, nudge=nudge, weight_init=init)
    assert params.weights_per_word == (2 if init == "host" else 1)
    S = net.n_s
    n_in, n_out = params.layout.n_in, params.topology.sizes[-1]
    stride = (params.n_free + params.n_nudged) * S
    W_in0, W_ss0, b0 = net.W_in.clone(), net.W_ss.clone(), net.b.clone()
    examples = []
    for e in range(3):
        x = torch.randint(0, 129, (1, n_in), generator=g, dtype=I64)
        s_init = torch.randint(0, 129, (1, S), generator=g, dtype=I64) if e else net.zero_state(1)
        target = int(torch.randint(0, n_out, (1,), generator=g))
        beta = 1.0 if e % 2 == 0 else -1.0
        t = net.prepare_targets(torch.nn.functional.one_hot(torch.tensor([target]), n_out).float())
        d = net.input_drive(x)
        s0 = net.relax(s_init, d, params.n_free, event_base=torch.tensor([e * stride]))
        sb = net.relax(s0, d, params.n_nudged, 0.5, beta, t,
                       event_base=torch.tensor([e * stride + params.n_free * S]))
        net.learn(x, s0, sb, beta, e)
        examples.append(dict(x=x[0].tolist(), s_init=s_init[0].tolist(), target=target, beta=beta,
                             s0=s0[0].tolist(), sb=sb[0].tolist(),
                             weights=params.lane_weights(net.W_in, net.W_ss), b=net.b.tolist()))

    cm = cycle_model(params)
    for e, (ex, (r, (ws, b))) in enumerate(zip(examples, _train_on_chip(params, (W_in0, W_ss0, b0), examples))):
        assert r.s0 == ex["s0"], f"example {e}: free equilibrium"
        assert r.final == ex["sb"], f"example {e}: weakly-clamped state"
        assert ws == ex["weights"], f"example {e}: weights after the update"
        assert b == ex["b"], f"example {e}: biases after the update"
        assert r.cycles["free"] == cm["free"] and r.cycles["nudged"] == cm["nudged"]
        assert r.cycles["update"] == cm["update"]
        assert r.cycles["total"] == cm["train_example"]


def test_core_rate_registers_set_the_on_chip_rate():
    """The ``rate`` registers read back the design's multipliers after reset; with other M
    written into them (a quarter to three quarters of each pair's, one pair frozen at 0),
    two training examples update every weight and bias as FixedNetwork with those
    multipliers (the shifts z stay the design's)."""
    fixed = {"state": 8, "weight": 8, "bias": 12, "rounding": "stochastic"}
    params, net, g = _setup(TOPOS["skip"](), fixed, 2, n_free=4, n_nudged=2, rates=(0.5, 0.25, 0.125))
    reset = params.rate_reset()
    Ms = [M * (q % 3 + 1) // 4 for q, M in enumerate(reset)]
    Ms[params.layout.pair_index(1, 2)] = 0  # the pair of layers 1-2 frozen
    n_in, S, n_out = params.layout.n_in, net.n_s, params.topology.sizes[-1]
    start = (net.W_in.clone(), net.W_ss.clone(), net.b.clone())
    net = copy.deepcopy(net)  # the model with the host's multipliers (params.net keeps the design's)
    for q, pair in enumerate(params.layout.pairs):
        net.mult[pair] = type(net.mult[pair])(Ms[q], net.mult[pair].E)
    stride = (params.n_free + params.n_nudged) * S
    examples = []
    for e in range(2):
        x = torch.randint(0, 129, (1, n_in), generator=g, dtype=I64)
        target, beta = e % n_out, (1.0, -1.0)[e]
        t = net.prepare_targets(torch.nn.functional.one_hot(torch.tensor([target]), n_out).float())
        d = net.input_drive(x)
        s0 = net.relax(net.zero_state(1), d, params.n_free, event_base=torch.tensor([e * stride]))
        sb = net.relax(s0, d, params.n_nudged, 0.5, beta, t, event_base=torch.tensor([e * stride + params.n_free * S]))
        net.learn(x, s0, sb, beta, e)
        examples.append(dict(x=x[0].tolist(), target=target, beta=beta,
                             weights=params.lane_weights(net.W_in, net.W_ss), b=net.b.tolist()))
    assert examples[0]["weights"] != params.lane_weights(*start[:2])  # the update moved something

    async def body(drv, out):
        out["reset"] = [await drv.read(drv.map.reg("rate") + q) for q in range(len(reset))]
        await drv.load_params(*start)
        await drv.set_rates(Ms)
        out["written"] = [await drv.read(drv.map.reg("rate") + q) for q in range(len(reset))]
        out["runs"] = []
        for e, ex in enumerate(examples):
            await drv.load_example(ex["x"], [0] * S, ex["target"])
            await drv.run(False, example=e, update=e, beta_neg=ex["beta"] < 0)
            out["runs"].append(await drv.read_params())

    out = _simulate(params, body)
    assert out["reset"] == reset and out["written"] == Ms
    for e, (ex, (ws, b)) in enumerate(zip(examples, out["runs"])):
        assert ws == ex["weights"], f"example {e}: weights after the update"
        assert b == ex["b"], f"example {e}: biases after the update"


@pytest.mark.parametrize("rounding,beta,nudge,overflow", [
    (r, b, "eq5", "saturate") for r in ("floor", "nearest-even", "stochastic") for b in (1.0, -1.0, 0.5)
] + [
    # after-step: 2 eps |beta| = 2^g with g = 0 (a copy of the target for beta > 0),
    # g = -1 (the floored shift) and g = 1 (overshoot), both signs
    (r, b, "after-step", "saturate") for r in ("floor", "nearest-even", "stochastic")
    for b in (1.0, -1.0, 0.5, -0.5, 2.0, -2.0)
] + [
    # a wrapping accumulator: the drive word D_i (inputs' part + bias, exact) and the step's sum
    # wrap together, as the model's whole sum does (numerics.md §2)
    ("stochastic", 1.0, "after-step", "wrap"), ("nearest-even", -1.0, "eq5", "wrap"),
])
def test_one_step_neuron_update_from_random_states(rounding, beta, nudge, overflow):
    """The accumulator and neuron unit: one free step and one weakly-clamped step from
    random states in [0, 1] (every neuron, inside and at the bounds), with a wide
    weight store whose MAC weights saturate and a narrow saturating (or wrapping) accumulator."""
    fixed = {"state": 8, "weight": "fxp-s6/4", "weight_store": "fxp-s10/7", "bias": 10, "rounding": rounding,
             "acc": 13, "acc_overflow": overflow}
    topo = layer_skipping([6, 5, 4, 3], n_rewire=6, seed=1)
    params, net, g = _setup(topo, fixed, 2, n_free=1, n_nudged=1, beta=beta, nudge=nudge)
    net.W_ss = (net.W_ss * 9) .clamp(params.num.weight_store.min_raw, params.num.weight_store.max_raw)
    net.W_ss = torch.triu(net.W_ss, 1) + torch.triu(net.W_ss, 1).T
    net._refresh()
    assert int((net.W_ss >> 3).abs().max()) > 31  # some MAC weights saturate
    S, n_in = net.n_s, params.layout.n_in
    x = torch.randint(0, 129, (1, n_in), generator=g, dtype=I64)
    s_init = torch.randint(0, 129, (1, S), generator=g, dtype=I64)
    s_init[0, :2] = torch.tensor([0, 128])
    t = net.prepare_targets(torch.nn.functional.one_hot(torch.tensor([2]), 3).float())
    d = net.input_drive(x)
    if overflow == "wrap":  # some sums do wrap
        assert (net.net_input(s_init, d) != d + s_init @ net.Wm_ss).any()
    stride = 2 * S
    s0 = net.relax(s_init, d, 1, event_base=torch.tensor([4 * stride]))
    sb = net.relax(s0, d, 1, 0.5, beta, t, event_base=torch.tensor([4 * stride + S]))

    async def body(drv, out):
        await drv.load_params(net.W_in, net.W_ss, net.b)
        await drv.load_example(x[0].tolist(), s_init[0].tolist(), 2)
        out["r"] = await drv.run(False, example=4, update=0, beta_neg=beta < 0)

    r = _simulate(params, body)["r"]
    assert r.s0 == s0[0].tolist()
    assert r.final == sb[0].tolist()


def test_inference_mode_and_argmax():
    fixed = {"state": 8, "weight": 8, "bias": 12, "rounding": "nearest-even"}
    params, net, g = _setup(TOPOS["skip"](), fixed, 2, n_free=6, n_nudged=3, seed=4)
    n_in = params.layout.n_in
    xs = [torch.randint(0, 129, (1, n_in), generator=g, dtype=I64) for _ in range(3)]

    async def body(drv, out):
        await drv.load_params(net.W_in, net.W_ss, net.b)
        out["r"] = []
        for e, x in enumerate(xs):
            await drv.load_example(x[0].tolist(), [0] * net.n_s, None)
            out["r"].append(await drv.run(True, example=e))
        out["params"] = await drv.read_params()

    out = _simulate(params, body)
    cm = cycle_model(params)
    for e, (x, r) in enumerate(zip(xs, out["r"])):
        s = net.relax(net.zero_state(1), net.input_drive(x), params.n_free,
                      event_base=torch.tensor([e * params.n_free * net.n_s]))
        assert r.s0 == s[0].tolist() == r.final
        assert r.pred == int(net.outputs(s).argmax(1))
        assert r.cycles["update"] == 0 and r.cycles["total"] == cm["inference_example"]
    ws, b = out["params"]
    assert ws == params.lane_weights(net.W_in, net.W_ss) and b == net.b.tolist()  # inference learns nothing


# ------------------------------------------------------------ the settle rule (docs/numerics.md §4a)
def _golden(net, beta):
    """The golden twin with the fast model's current parameters."""
    N, n_in = net.topology.n, net.n_in
    W = torch.zeros(N, N, dtype=I64)
    W[:n_in, n_in:] = net.W_in
    W[n_in:, :n_in] = net.W_in.T
    W[n_in:, n_in:] = net.W_ss
    b = torch.zeros(N, dtype=I64)
    b[n_in:] = net.b
    return GoldenNetwork.from_fixed_params(net.topology, net.num, net.eps, beta, 1, net.rates, W.tolist(),
                                           b.tolist(), net.nudge)


SETTLE_FIXED = {"state": 6, "weight": 8, "bias": 12}  # 6-bit states: most examples settle within 12 steps
SETTLE_N_FREE = 12


def _settle_training_examples(params, net, g, rule, n):
    """n training examples through FixedNetwork with the settle rule (the golden twin's free
    phase checked against it): inputs, start states, targets, expected states, step counts
    and parameters after each update."""
    S, one = net.n_s, params.num.state.one()
    n_in, n_out = params.layout.n_in, params.topology.sizes[-1]
    stride = (params.n_free + params.n_nudged) * S
    examples = []
    for e in range(n):
        x = torch.randint(0, one + 1, (1, n_in), generator=g, dtype=I64)
        s_init = torch.randint(0, one + 1, (1, S), generator=g, dtype=I64) if e else net.zero_state(1)
        target = int(torch.randint(0, n_out, (1,), generator=g))
        beta = 1.0 if e % 2 == 0 else -1.0
        t = net.prepare_targets(torch.nn.functional.one_hot(torch.tensor([target]), n_out).float())
        d = net.input_drive(x)
        s0 = net.relax(s_init, d, params.n_free, event_base=torch.tensor([e * stride]), settle=rule)
        taken = int(net.last_steps[0])
        gold = _golden(net, params.beta)
        g0 = gold.relax(x[0].tolist(), s_init[0].tolist(), params.n_free, event_base=e * stride, settle=rule)
        assert g0 == s0[0].tolist() and gold.last_steps == taken, f"example {e}: golden twin"
        sb = net.relax(s0, d, params.n_nudged, 0.5, beta, t,
                       event_base=torch.tensor([e * stride + params.n_free * S]))
        net.learn(x, s0, sb, beta, e)
        examples.append(dict(x=x[0].tolist(), s_init=s_init[0].tolist(), target=target, beta=beta,
                             s0=s0[0].tolist(), sb=sb[0].tolist(), steps=taken,
                             weights=params.lane_weights(net.W_in, net.W_ss), b=net.b.tolist()))
    return examples


# n_free and seed chosen so that each case has examples that settle early and ones that do not
@pytest.mark.parametrize("topo_name,P,rounding,tol,steps,nudge,n_free,seed", [
    ("skip", 2, "floor", 0, 1, "after-step", 12, 0),
    ("skip", 3, "nearest-even", 0, 2, "eq5", 10, 0),
    ("skip", 2, "stochastic", 0, 1, "after-step", 10, 0),
    ("skip", 2, "stochastic", 1, 1, "after-step", 8, 0),
    ("skip", 1, "stochastic", 1, 2, "eq5", 10, 1),
    ("layered", 2, "nearest-even", 1, 2, "after-step", 12, 0),
])
def test_settle_rule_trains_a_sequence_bit_exact(topo_name, P, rounding, tol, steps, nudge, n_free, seed):
    """Four training examples on chip with the settle rule on: each free phase stops after
    the step FixedNetwork and the golden twin stop after (register free_steps), with their
    state; the weakly-clamped phase after an early exit rounds with the events of §5
    (base + n_free * S), and every weight and bias after the update is the model's. The
    cycles are the cycle model's for the step count. Examples that settle early and ones
    that run all n_free steps are both among them."""
    rule = SettleRule(tol, steps)
    fixed = {**SETTLE_FIXED, "rounding": rounding}
    params, net, g = _setup(TOPOS[topo_name](), fixed, P, n_free=n_free, n_nudged=3, nudge=nudge, settle=rule,
                            seed=seed)
    W_in0, W_ss0, b0 = net.W_in.clone(), net.W_ss.clone(), net.b.clone()
    examples = _settle_training_examples(params, net, g, rule, 4)
    counts = [ex["steps"] for ex in examples]
    assert min(counts) < params.n_free and max(counts) == params.n_free, counts  # both cases covered

    cm = cycle_model(params)
    runs = _train_on_chip(params, (W_in0, W_ss0, b0), examples, sleep=True)
    for e, (ex, (r, (ws, b))) in enumerate(zip(examples, runs)):
        assert r.free_steps == ex["steps"], f"example {e}: free step count"
        assert r.s0 == ex["s0"], f"example {e}: free state"
        assert r.final == ex["sb"], f"example {e}: weakly-clamped state"
        assert ws == ex["weights"] and b == ex["b"], f"example {e}: parameters after the update"
        assert r.cycles["free"] == ex["steps"] * cm["step"] and r.cycles["nudged"] == cm["nudged"]
        assert r.cycles["total"] == example_cycles(cm, ex["steps"], False)


def test_settle_registers_switch_the_rule():
    """settle_steps = 0 written by the host gives the full free phase of a design built
    with the rule; other tolerances and quiet counts written at run time are obeyed; a
    design built without the rule runs it once the registers say so."""
    fixed = {**SETTLE_FIXED, "rounding": "stochastic"}
    rule = SettleRule(1, 1)
    params, net, g = _setup(TOPOS["skip"](), fixed, 2, n_free=SETTLE_N_FREE, n_nudged=2, nudge="after-step",
                            settle=rule)
    S, one, n_in = net.n_s, params.num.state.one(), params.layout.n_in
    xs = [torch.randint(0, one + 1, (1, n_in), generator=g, dtype=I64) for _ in range(3)]
    runs = [(0, None), (0, rule), (1, SettleRule(0, 1)), (1, SettleRule(2, 3)), (2, None), (2, rule)]
    stride = params.n_free * S

    async def body(drv, out):
        await drv.load_params(net.W_in, net.W_ss, net.b)
        out["init"] = [await drv.read(drv.map.reg(k)) for k in ("settle_tol", "settle_steps")]
        out["r"] = []
        for e, r in runs:
            await drv.set_settle(r)
            await drv.load_example(xs[e][0].tolist(), [0] * S, None)
            out["r"].append(await drv.run(True, example=e))

    out = _simulate(params, body)
    assert out["init"] == [1, 1]  # the registers' reset values are the design's rule
    cm = cycle_model(params)
    for (e, r), got in zip(runs, out["r"]):
        s = net.relax(net.zero_state(1), net.input_drive(xs[e]), params.n_free,
                      event_base=torch.tensor([e * stride]), settle=r)
        taken = int(net.last_steps[0])
        assert got.s0 == s[0].tolist() and got.free_steps == taken, (e, r)
        assert got.cycles["total"] == example_cycles(cm, taken, True)
        if r is None:
            assert taken == params.n_free and got.cycles["free"] == cm["free"]
    assert any(got.free_steps < params.n_free for got in out["r"])

    # A design built without the rule: registers at 0, the full phase, until the host sets them.
    plain, *_ = _setup(TOPOS["skip"](), fixed, 2, n_free=SETTLE_N_FREE, n_nudged=2, nudge="after-step")
    plain.net.W_in, plain.net.W_ss, plain.net.b = net.W_in, net.W_ss, net.b

    async def body2(drv, out):
        await drv.load_params(net.W_in, net.W_ss, net.b)
        out["init"] = [await drv.read(drv.map.reg(k)) for k in ("settle_tol", "settle_steps")]
        out["r"] = []
        for r in (None, rule):
            if r is not None:
                await drv.set_settle(r)
            await drv.load_example(xs[0][0].tolist(), [0] * S, None)
            out["r"].append(await drv.run(True, example=0))

    out = _simulate(plain, body2)
    assert out["init"] == [0, 0]
    for r, got in zip((None, rule), out["r"]):
        s = net.relax(net.zero_state(1), net.input_drive(xs[0]), params.n_free, event_base=torch.tensor([0]),
                      settle=r)
        assert got.s0 == s[0].tolist() and got.free_steps == int(net.last_steps[0])


@pytest.mark.parametrize("rounding,tol", [("nearest-even", 0), ("stochastic", 1)])
def test_settle_rule_inference_and_argmax(rounding, tol):
    """Inference (free phase, arg-max) under the rule: states, step counts, predictions and
    cycles equal the model's, and the prediction is read from the state the phase kept
    (the driver sleeping through each example as under cocotb)."""
    fixed = {**SETTLE_FIXED, "rounding": rounding}
    rule = SettleRule(tol, 1)
    params, net, g = _setup(TOPOS["skip-add"](), fixed, 2, n_free=SETTLE_N_FREE, n_nudged=3, seed=4,
                            settle=rule)
    S, one, n_in = net.n_s, params.num.state.one(), params.layout.n_in
    xs = [torch.randint(0, one + 1, (1, n_in), generator=g, dtype=I64) for _ in range(4)]

    async def body(drv, out):
        await drv.load_params(net.W_in, net.W_ss, net.b)
        out["r"] = []
        for e, x in enumerate(xs):
            await drv.load_example(x[0].tolist(), [0] * S, None)
            out["r"].append(await drv.run(True, example=e))

    out = _simulate(params, body, sleep=True)
    cm = cycle_model(params)
    counts = []
    for e, (x, r) in enumerate(zip(xs, out["r"])):
        s = net.relax(net.zero_state(1), net.input_drive(x), params.n_free,
                      event_base=torch.tensor([e * params.n_free * S]), settle=rule)
        counts.append(int(net.last_steps[0]))
        assert r.free_steps == counts[-1] and r.s0 == s[0].tolist() == r.final
        assert r.pred == int(net.outputs(s).argmax(1))
        assert r.cycles["total"] == example_cycles(cm, counts[-1], True)
    assert min(counts) < params.n_free, counts
