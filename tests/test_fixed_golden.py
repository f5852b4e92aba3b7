"""The fast fixed-point model (fixed_net.py) against the element-by-element
fxpmath golden model (golden.py), bit for bit, plus the random words and the rounding
modes of docs/numerics.md checked by hand. Every comparison is an exact
integer equality; there are no tolerances."""

import pytest
import torch
from fxpmath import Fxp

from eqprop.model.fixed_net import FixedNetwork
from eqprop.model.golden import GoldenHash, GoldenNetwork, fx, golden_round, raw
from eqprop.model.numerics import numerics_from_mapping, random_words, shift_round
from eqprop.model.topology import layer_skipping, layered

I64 = torch.int64
N_FREE, N_NUDGED = 3, 2

SIZES = [6, 5, 4, 3]
TOPOS = {
    "layered": lambda: layered(SIZES),
    "skip": lambda: layer_skipping(SIZES, n_rewire=8, mode="replace", seed=1),
    "skip-add": lambda: layer_skipping(SIZES, n_rewire=8, mode="add", seed=2),
}


def _case(topo="layered", bits=None, eps=0.5, beta=1.0, rates=(1.0,), B=2, sign=1, u=3, seed=0,
          big_weights=False, expect=(), nudge="eq5"):
    return dict(topo=topo, bits=bits or {}, eps=eps, beta=beta, rates=list(rates), B=B, sign=sign, u=u,
                seed=seed, big_weights=big_weights, expect=set(expect), nudge=nudge)


CASES = {}
for _t in TOPOS:
    for _r, _sg in (("floor", 1), ("nearest-even", -1), ("stochastic", 1)):
        CASES[f"{_t}-{_r}"] = _case(_t, {"rounding": _r}, eps=0.25 if _r == "nearest-even" else 0.5,
                                    B=3 if (_t, _r) == ("layered", "nearest-even") else 2, sign=_sg, seed=100 + len(CASES))
CASES.update({
    # |beta| = 0.5 (m = -1); stochastic states, floor updates
    "beta-half": _case("layered", {"state_rounding": "stochastic", "rounding": "floor"}, beta=0.5, sign=-1, seed=20),
    "state-nearest-update-stochastic": _case(
        "skip", {"state_rounding": "nearest-even", "rounding": "stochastic"}, eps=0.25, seed=21),
    # MAC weight narrower than the stored weight (floor), per-layer rates, shift rates
    "wide-store-shift": _case(
        "layered", {"weight": "fxp-s6/4", "weight_store": "fxp-s12/10", "rounding": "stochastic",
                    "lr_mode": "shift"}, rates=(0.4, 0.2, 0.1), seed=22),
    # store with more integer bits than the MAC weight: the MAC derivation saturates
    "wide-store-saturating": _case(
        "skip-add", {"weight": "fxp-s6/4", "weight_store": "fxp-s14/10", "rounding": "nearest-even",
                     "state_rounding": "stochastic"}, rates=(0.3, 0.2, 0.1), big_weights=True, seed=23,
        expect={"mac_saturates", "nudge_hidden"}),
    # narrow accumulators: the overflow policy changes the sum
    "acc-saturate": _case(
        "layered", {"state": 6, "weight": 6, "bias": 8, "acc": 10, "acc_overflow": "saturate",
                    "rounding": "stochastic"}, seed=24, expect={"acc_overflows"}),
    "acc-wrap": _case(
        "skip", {"state": 6, "weight": 6, "bias": 8, "acc": 10, "acc_overflow": "wrap", "rounding": "floor"},
        seed=25, expect={"acc_overflows"}),
    # huge rates: weights and biases saturate; with shift, E < 0 and d <= 0 (exact left shifts)
    "huge-rate-shift": _case("layered", {"rounding": "stochastic", "lr_mode": "shift"}, rates=(512.0,), seed=31,
                             expect={"saturations"}),
    "huge-rate-multiplier": _case("skip", {"rounding": "nearest-even"}, rates=(20.0,), sign=-1, seed=27,
                                  expect={"saturations"}),
    # eps = 1 (k = 0), beta = 2 (m = 1), one example per batch
    "eps-one-beta-two": _case("skip-add", {"state_rounding": "stochastic", "rounding": "nearest-even"}, eps=1.0,
                              beta=2.0, B=1, sign=-1, seed=29),
    # nudge = after-step (§4 step 4): g = 1 + m - k = 0 (the paper's eps 1/2, beta 1:
    # a copy of the target for beta > 0), g = -1 (the floored shift), g = 2 (overshoot)
    "after-step-paper": _case("layered", {"rounding": "nearest-even"}, seed=40, nudge="after-step"),
    "after-step-skip-stochastic": _case("skip", {"rounding": "stochastic"}, sign=-1, seed=41, nudge="after-step"),
    "after-step-beta-half": _case("skip-add", {"state_rounding": "stochastic", "rounding": "floor"}, beta=0.5,
                                  seed=42, nudge="after-step"),
    "after-step-eps-quarter": _case("layered", {"state_rounding": "nearest-even", "rounding": "stochastic"},
                                    eps=0.25, sign=-1, seed=43, nudge="after-step"),
    "after-step-eps-one-beta-two": _case("skip", {"state_rounding": "floor", "rounding": "nearest-even"}, eps=1.0,
                                         beta=2.0, B=1, seed=44, nudge="after-step"),
    # coarse weights (fW = 1) and eps = 1/4, g = -1: the state rounding drops only
    # d = 3 bits, so the floor of the nudge term N decides many results
    "after-step-coarse": _case("skip", {"weight": "fxp-s8/1", "weight_store": "fxp-s12/6", "bias": "fxp-s6/3", "rounding": "nearest-even"},
                               eps=0.25, B=16, seed=45, nudge="after-step"),
    # stochastic state rounding with d = fW + k > 16 (the R < rem >> (d - 16) branch)
    "state-d-over-16": _case("layered", {"weight": "fxp-s20/18", "rounding": "stochastic"}, eps=0.25, seed=28),
})


# ----------------------------------------------------------------- helpers
def _full(net, W_in, W_ss, b=None):
    N, n_in = net.topology.n, net.n_in
    W = torch.zeros(N, N, dtype=I64)
    W[:n_in, n_in:] = W_in
    W[n_in:, :n_in] = W_in.T
    W[n_in:, n_in:] = W_ss
    if b is None:
        return W.tolist()
    bf = torch.zeros(N, dtype=I64)
    bf[n_in:] = b
    return W.tolist(), bf.tolist()


def _build(c):
    topo = TOPOS[c["topo"]]()
    num = numerics_from_mapping(c["bits"])
    net = FixedNetwork(topo, num, c["eps"], c["beta"], c["B"], c["rates"], nudge=c["nudge"])
    net.init_params(c["seed"], other=0.3)
    g = torch.Generator().manual_seed(1000 + c["seed"])
    fb = num.bias
    net.b = torch.randint(fb.min_raw // 4, fb.max_raw // 4 + 1, (net.n_s,), generator=g, dtype=I64)
    if c["big_weights"]:  # a third of the connections anywhere in the store format's range
        fw = num.weight_store
        R = torch.randint(fw.min_raw, fw.max_raw + 1, (topo.n, topo.n), generator=g, dtype=I64)
        pick = torch.rand(topo.n, topo.n, generator=g) < 0.33
        R, pick = torch.triu(R, 1), torch.triu(pick, 1)
        R, pick = R + R.T, pick | pick.T
        n_in = net.n_in
        net.W_in = torch.where(pick[:n_in, n_in:], R[:n_in, n_in:], net.W_in) * net.mask_in
        net.W_ss = torch.where(pick[n_in:, n_in:], R[n_in:, n_in:], net.W_ss) * net.mask_ss
    net._refresh()
    W, b = _full(net, net.W_in, net.W_ss, net.b)
    gold = GoldenNetwork.from_fixed_params(topo, num, c["eps"], c["beta"], c["B"], c["rates"], W, b, c["nudge"])
    return net, gold, g


def _assert_params_equal(net, gold):
    W, b = _full(net, net.W_in, net.W_ss, net.b)
    assert gold.weights_raw() == W
    assert gold.biases_raw() == b
    assert gold.mac_weights_raw() == _full(net, net.Wm_in, net.Wm_ss)
    assert gold.saturated_weights() == net.saturated_weights()


def _phase(net, gold, x, s, drive, steps, bases, beta=0.0, t=None):
    """Both models over one phase; the fast one in one call and step by step. Returns s."""
    sign = 0 if not beta else (1 if beta > 0 else -1)
    fast = net.relax(s, drive, steps, net.eps, beta, t, bases)
    traj_fast, cur = [], s
    for k in range(steps):
        cur = net.relax(cur, drive, 1, net.eps, beta, t, bases + k * net.n_s)
        traj_fast.append(cur)
    assert torch.equal(traj_fast[-1], fast)
    for e in range(x.shape[0]):
        traj = gold.relax(x[e].tolist(), s[e].tolist(), steps, sign,
                          None if t is None else t[e].tolist(), int(bases[e]), trajectory=True)
        assert traj == [tf[e].tolist() for tf in traj_fast], f"example {e}"
    return fast


def _update(net, gold, x, s0, sb, sign, u):
    beta = sign * net.beta_abs
    st = net.learn(x, s0, sb, beta, u)
    gs = gold.update([(x[e].tolist(), s0[e].tolist(), sb[e].tolist()) for e in range(x.shape[0])], sign, u)
    # §6 counts connections whose dW rounded to 0 (before saturation).
    assert st.zero == gs.zero
    assert gs.nonzero_d == st.nonzero_d
    assert gs.weight_saturations == st.weight_saturations
    assert gs.bias_saturations == st.bias_saturations
    _assert_params_equal(net, gold)
    return st


def _interior(s, one):
    return int(((s > 0) & (s < one)).sum())


@pytest.mark.parametrize("name", CASES)
def test_fast_equals_golden(name):
    c = CASES[name]
    net, gold, g = _build(c)
    num = net.num
    one, S, B = num.state.one(), net.n_s, c["B"]
    _assert_params_equal(net, gold)
    x = torch.randint(0, one + 1, (B, net.n_in), generator=g, dtype=I64)
    x[0, :2] = torch.tensor([0, one])
    labels = torch.randint(0, net.n_out, (B,), generator=g)
    t = net.prepare_targets(torch.nn.functional.one_hot(labels, net.n_out).to(torch.float64))
    drive = net.input_drive(x)
    per_example = (N_FREE + N_NUDGED) * S
    ex = torch.arange(B, dtype=I64)

    # Free phase from zero (training examples 5, 6, ...).
    bases = (5 + ex) * per_example
    s_zero = _phase(net, gold, x, net.zero_state(B), drive, N_FREE, bases)
    assert _interior(s_zero, one) > 0  # the comparison is not between saturated states only
    # Free phase from a nonzero persistent state (examples 17, 18, ...).
    bases = (17 + ex) * per_example
    s_p = torch.randint(0, one + 1, (B, S), generator=g, dtype=I64)
    s0 = _phase(net, gold, x, s_p, drive, N_FREE, bases)
    # Weakly-clamped phases from s0, both signs of beta.
    sb = {}
    for sg in (1, -1):
        sb[sg] = _phase(net, gold, x, s0, drive, N_NUDGED, bases + N_FREE * S, sg * c["beta"], t)
    if "nudge_hidden" not in c["expect"]:
        assert not torch.equal(sb[1], sb[-1])
    if c["nudge"] == "after-step" and c["eps"] * c["beta"] == 0.5:
        # 2 eps beta = 1: with beta > 0 the outputs are the target exactly (§4 step 4)
        assert torch.equal(net.outputs(sb[1]), t)

    # The update, then a free phase with the new weights, then a second update.
    sg = c["sign"]
    before = (net.W_in.clone(), net.W_ss.clone(), net.b.clone())
    st = _update(net, gold, x, s0, sb[sg], sg, c["u"])
    assert not (torch.equal(before[0], net.W_in) and torch.equal(before[1], net.W_ss))
    assert not torch.equal(before[2], net.b)
    drive = net.input_drive(x)
    _phase(net, gold, x, s0, drive, N_FREE, (40 + ex) * per_example)
    st2 = _update(net, gold, x, s0, sb[-sg], -sg, c["u"] + 1)

    assert sum(st.nonzero_d) > 0
    if "saturations" in c["expect"]:
        assert st.weight_saturations > 0 and st.bias_saturations > 0
        assert st2.weight_saturations > 0
    if "acc_overflows" in c["expect"]:
        assert gold.acc_overflows > 0
    if "mac_saturates" in c["expect"]:
        fw = num.weight
        assert bool(((net.W_ss >> (num.weight_store.n_frac - fw.n_frac)) > fw.max_raw).any())
        assert bool(((net.W_ss >> (num.weight_store.n_frac - fw.n_frac)) < fw.min_raw).any())


def test_comparison_detects_one_lsb():
    """The harness can fail: a bias one state LSB off, or a shifted random event, is seen."""
    c = CASES["layered-stochastic"]
    net, gold, g = _build(c)
    num = net.num
    one = num.state.one()
    x = torch.randint(0, one + 1, (2, net.n_in), generator=g, dtype=I64)
    s = net.relax(net.zero_state(2), net.input_drive(x), N_FREE, event_base=torch.tensor([0, 100]))
    zero = [0] * net.n_s
    assert gold.relax(x[0].tolist(), zero, N_FREE, event_base=0) == s[0].tolist()
    assert gold.relax(x[0].tolist(), zero, N_FREE, event_base=1) != s[0].tolist()
    i = next(k for k in range(net.n_s) if 0 < s[0, k] < one)  # a neuron inside (0, 1)
    _, b = _full(net, net.W_in, net.W_ss, net.b)
    # Two state LSBs of bias move V by one LSB (eps = 1/2): with the same random
    # word the rounded state moves by exactly one, so some step of the trajectory differs.
    b[net.n_in + i] += 2 << (num.bias.n_frac - num.state.n_frac)
    off = GoldenNetwork.from_fixed_params(net.topology, num, c["eps"], c["beta"], c["B"], c["rates"],
                                          gold.weights_raw(), b)
    ref = gold.relax(x[0].tolist(), zero, N_FREE, event_base=0, trajectory=True)
    assert off.relax(x[0].tolist(), zero, N_FREE, event_base=0, trajectory=True) != ref


def test_zero_counter_is_rounding_only():
    num = numerics_from_mapping({"rounding": "floor"})
    topo = layered([2, 2, 2])
    net = FixedNetwork(topo, num, 0.5, 1.0, 1, [1.0])
    net.W_ss[0, 2] = net.W_ss[2, 0] = num.weight_store.max_raw  # hidden 0 - output 0 at the limit
    net._refresh()
    W, b = _full(net, net.W_in, net.W_ss, net.b)
    gold = GoldenNetwork.from_fixed_params(topo, num, 0.5, 1.0, 1, [1.0], W, b)
    one = num.state.one()
    x, s0, sb = torch.zeros(1, 2, dtype=I64), torch.zeros(1, 4, dtype=I64), torch.full((1, 4), one)
    # D = 1.0 on each hidden-output connection, dW = +64 LSB each: none rounds to 0,
    # one is clipped by saturation.
    gs = gold.update([(x[0].tolist(), s0[0].tolist(), sb[0].tolist())], 1, 0)
    assert gs.zero == [0, 0] and gs.nonzero_d == [0, 4] and gs.weight_saturations == 1
    st = net.learn(x, s0, sb, 1.0, 0)
    assert st.weight_saturations == 1
    assert st.zero == gs.zero  # a clipped update is a saturation, not a zero correction


# ----------------------------------------------------------- random words (§5)
def _j_by_hand(a):
    """§5's J once more, written from the document's formula with % 2**32."""
    a = (a + 0x7ED55D16 + (a << 12)) % 2**32
    a = (a ^ 0xC761C23C ^ (a >> 19)) % 2**32
    a = (a + 0x165667B1 + (a << 5)) % 2**32
    a = ((a + 0xD3A2646C) ^ (a << 9)) % 2**32
    a = (a + 0xFD7046C5 + (a << 3)) % 2**32
    a = (a ^ 0xB55A4F09 ^ (a >> 16)) % 2**32
    return a


def _h_by_hand(a):
    return _j_by_hand(_j_by_hand(a))


def test_random_words_first_values():
    # First words of the stream with seed 0xACE1 (events 0..3) and H(0).
    expected = [0xEE106C8A, 0x7755D26A, 0x5661EB58, 0xB21A380B]
    assert [_h_by_hand(e ^ 0xACE1) for e in range(4)] == expected
    assert random_words(0xACE1, torch.arange(4)).tolist() == expected
    assert [GoldenHash(0xACE1).word(e) for e in range(4)] == expected
    assert _h_by_hand(0) == 0x2B4F8145 == GoldenHash.h(0)
    assert _j_by_hand(0) == 0x6B4ED927 == GoldenHash.j(0)


def test_random_words_far_indices_and_streams():
    idx = [0, 1, 4095, 65535, 2**31, 2**32 - 1, 2**32, 2**32 + 5, 3 * 2**33 + 17]
    for seed in (0xACE1, 0x5EED, 0, 0xFFFFFFFF):
        fast = random_words(seed, torch.tensor(idx, dtype=I64)).tolist()
        assert fast == [_h_by_hand((e % 2**32) ^ seed) for e in idx] == [GoldenHash(seed).word(e) for e in idx]
    # indices are taken mod 2^32; two streams differ
    assert random_words(7, torch.tensor([5])).item() == random_words(7, torch.tensor([2**32 + 5])).item()
    a = random_words(0xACE1, torch.arange(1000))
    b = random_words(0x5EED, torch.arange(1000))
    assert int((a == b).sum()) < 3


def test_hash_paths_agree():
    """The CPU's uint32 steps and the masked int64 steps other devices run give the same words
    (including negative and > 32-bit inputs, and a non-contiguous tensor)."""
    from eqprop.model.numerics import _hash32_int64, _hash32_uint32

    x = torch.cat([torch.arange(-3000, 3000, dtype=I64) * 7919, torch.tensor([2**40 + 3, -(2**50), 2**32 - 1])])
    assert torch.equal(_hash32_uint32(x), _hash32_int64(x))
    m = x[:6000].reshape(60, 100)[:, ::7]
    assert torch.equal(_hash32_uint32(m), _hash32_int64(m))
    assert _hash32_uint32(torch.tensor([0], dtype=I64)).item() == _h_by_hand(0)


def test_random_words_look_uniform():
    """Each of the 32 bits of 2^20 consecutive words is set about half the time, and
    the top 8 bits fill 256 bins evenly, and so do the top 4 bits of consecutive
    pairs (chi-square, 255 degrees of freedom: mean 255, sd 22.6; bound 370 is
    P < 1e-4). One pass of Jenkins' hash fails the pair test (chi-square ~475,000)."""
    w = random_words(0xACE1, torch.arange(1 << 20, dtype=I64))
    n = w.numel()
    for bit in range(32):
        frac = ((w >> bit) & 1).sum().item() / n
        assert abs(frac - 0.5) < 0.004, (bit, frac)  # ~8 standard deviations of 1/(2 sqrt(n))

    def chi2(v):
        c = torch.bincount(v, minlength=256).to(torch.float64)
        return float(((c - v.numel() / 256) ** 2 / (v.numel() / 256)).sum())

    assert chi2(w >> 24) < 370
    assert chi2(((w[:-1] >> 28) << 4) | (w[1:] >> 28)) < 370
    single = GoldenHash.j  # one pass only, on a smaller sample
    ws = torch.tensor([single(e ^ 0xACE1) for e in range(1 << 14)], dtype=I64)
    assert chi2(((ws[:-1] >> 28) << 4) | (ws[1:] >> 28)) > 1000


# --------------------------------------------------------------- rounding (§3)
def test_floor_and_nearest_even_hand_cases():
    t = lambda *v: torch.tensor(v, dtype=I64)  # noqa: E731
    # floor = arithmetic shift toward -inf (not fxpmath's trunc toward 0)
    assert shift_round(t(-5, -4, -1, 5, 7), 1, "floor").tolist() == [-3, -2, -1, 2, 3]
    assert shift_round(t(-7, -8, -9, 7), 3, "floor").tolist() == [-1, -1, -2, 0]
    # nearest-even, d = 1: 2.5 -> 2, 3.5 -> 4, -2.5 -> -2, -3.5 -> -4, 1.5 -> 2, -1.5 -> -2, 0.5 -> 0
    assert shift_round(t(5, 7, -5, -7, 3, -3, 1), 1, "nearest-even").tolist() == [2, 4, -2, -4, 2, -2, 0]
    # d = 2: 1.25 -> 1, 1.5 -> 2, 1.75 -> 2, 2.5 -> 2, -1.25 -> -1, -1.5 -> -2, -1.75 -> -2, -2.5 -> -2
    assert shift_round(t(5, 6, 7, 10, -5, -6, -7, -10), 2, "nearest-even").tolist() == [1, 2, 2, 2, -1, -2, -2, -2]
    # d <= 0 is an exact left shift in every mode
    for mode in ("floor", "nearest-even", "stochastic"):
        assert shift_round(t(-3, 5), -2, mode, t(0, 0)).tolist() == [-12, 20]
    # the golden rounding on the same hand cases
    for v, d, mode, out in [(-5, 1, "floor", -3), (5, 1, "nearest-even", 2), (7, 1, "nearest-even", 4),
                            (-5, 1, "nearest-even", -2), (-7, 1, "nearest-even", -4), (10, 2, "nearest-even", 2)]:
        assert raw(golden_round(fx(v, 4), d, mode)) == out


@pytest.mark.parametrize("d", [1, 2, 3, 5, 9])
def test_rounding_matches_fxpmath(d):
    vals = list(range(-300, 301)) + [(1 << 40) + 3, -(1 << 40) - (1 << (d - 1))]
    for mode, fxp_mode in (("floor", "floor"), ("nearest-even", "around")):
        ref = [int(Fxp(Fxp(v, signed=True, n_word=48, n_frac=d, raw=True), signed=True, n_word=48, n_frac=0,
                       rounding=fxp_mode).val) for v in vals]
        assert shift_round(torch.tensor(vals, dtype=I64), d, mode).tolist() == ref
        assert [raw(golden_round(fx(v, d + 3), d, mode)) for v in vals[::7]] == ref[::7]
    # fxpmath's 'trunc' rounds toward zero: not the contract's floor on negatives
    trunc = int(Fxp(Fxp(-5, signed=True, n_word=16, n_frac=1, raw=True), signed=True, n_word=16, n_frac=0,
                    rounding="trunc").val)
    assert trunc == -2 != shift_round(torch.tensor([-5]), 1, "floor").item()


@pytest.mark.parametrize("d", [4, 8, 12, 20, 36])
def test_stochastic_rounding_unbiased(d):
    """mean(result - exact) over 200,000 events within 0.005 LSB (about 4.4 standard
    deviations: sqrt(0.3 * 0.7 / 200000) = 0.001 LSB)."""
    n = 200_000
    rem = round(0.3 * (1 << d))
    q = torch.randint(-50, 50, (n,), generator=torch.Generator().manual_seed(d), dtype=I64)
    v = (q << d) + rem
    words = random_words(0xACE1, torch.arange(n, dtype=I64) + 12345)
    out = shift_round(v, d, "stochastic", words)
    up = out - q
    assert set(up.unique().tolist()) <= {0, 1}
    bias = (up.to(torch.float64).mean() - rem / (1 << d)).item()  # mean(result - exact), LSB
    assert abs(bias) < 0.005, bias
    # the golden rounding agrees with shift_round event by event
    gh = GoldenHash(0xACE1)
    for e in range(0, 3000, 37):
        w = gh.word(e + 12345)
        assert w == words[e].item()
        if d <= 20:
            assert raw(golden_round(fx(int(v[e]), d), d, "stochastic", w)) == out[e].item()


def test_stochastic_rounding_hand_cases():
    # d = 4, v = -3 + 5/16: up iff (R >> 28) < 5, i.e. R < 0x50000000
    # d = 36, v = 7 + 0x480000000/2^36: up iff R < (0x480000000 >> 4) = 0x48000000
    R = torch.tensor([0x4FFFFFFF, 0x50000000, 0x00000000, 0xFFFFFFFF], dtype=I64)
    v = torch.full((4,), (-3 << 4) + 5, dtype=I64)
    assert shift_round(v, 4, "stochastic", R).tolist() == [-2, -3, -2, -3]
    v = torch.full((4,), (7 << 36) + 0x480000000, dtype=I64)
    R = torch.tensor([0x47FFFFFF, 0x48000000, 0x00000000, 0xFFFFFFFF], dtype=I64)
    assert shift_round(v, 36, "stochastic", R).tolist() == [8, 7, 8, 7]
    for (vv, d, w, out) in [((-3 << 4) + 5, 4, 0x4FFFFFFF, -2), ((-3 << 4) + 5, 4, 0x50000000, -3),
                            ((7 << 20) + 0x48000, 20, 0x47FFFFFF, 8), ((7 << 20) + 0x48000, 20, 0x48000000, 7)]:
        assert raw(golden_round(fx(vv, d + 1), d, "stochastic", w)) == out


def test_golden_rejects_inexact():
    """The golden model refuses values fxpmath would convert through float64 inexactly."""
    from eqprop.model.golden import GoldenError

    with pytest.raises(GoldenError):
        golden_round(fx((1 << 55) + 1, 10), 3, "floor")
