"""Float model against independent computations: autograd of F, the fixed-point
condition, eq. (7) written per example, and the true gradient of the cost."""

import math

import pytest
import torch

from eqprop.model import energy
from eqprop.model.float_net import FloatNetwork, layer_pair_rate
from eqprop.model.topology import layer_skipping, layered

D = torch.float64


def _net(topo, seed=0, bias_scale=0.2):
    net = FloatNetwork(topo, dtype=D).init_params(seed, adjacent="glorot", other=0.3)
    g = torch.Generator().manual_seed(seed + 100)
    W, b = net.full()
    b = (torch.rand(topo.n, generator=g, dtype=D) * 2 - 1) * bias_scale
    net.set_full(W, b)
    return net


def _inputs(net, B, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(B, net.n_in, generator=g, dtype=D)
    t = torch.zeros(B, net.n_out, dtype=D)
    t[torch.arange(B), torch.randint(0, net.n_out, (B,), generator=g)] = 1.0
    return x, t


TOPOLOGIES = {
    "layered": lambda: layered([7, 6, 5, 4]),
    "skip": lambda: layer_skipping([7, 6, 5, 4], n_rewire=15, seed=3),
    "skip-add": lambda: layer_skipping([7, 6, 5, 4], n_rewire=15, mode="add", seed=4),
}


@pytest.mark.parametrize("name", TOPOLOGIES)
@pytest.mark.parametrize("beta", [0.0, 0.7, -1.0])
def test_grad_equals_autograd_of_F(name, beta):
    net = _net(TOPOLOGIES[name]())
    x, t = _inputs(net, 5)
    g = torch.Generator().manual_seed(7)
    s = torch.rand(5, net.n_s, generator=g, dtype=D)
    s[0, :3] = 0.0  # the bounds, where rho'(0) = rho'(1) = 1
    s[1, :3] = 1.0
    W, b = net.full()
    s_req = s.clone().requires_grad_(True)
    u = torch.cat([x, s_req], 1)
    F = energy.total_energy(u, W, b, beta, t, net.n_out).sum()
    (auto,) = torch.autograd.grad(F, s_req)
    fast = net.grad(s, net.input_drive(x), beta, t)
    ref = energy.grad_s(torch.cat([x, s], 1), W, b, beta, t, net.n_in, net.n_out)
    torch.testing.assert_close(fast, auto, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ref, auto, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", TOPOLOGIES)
@pytest.mark.parametrize("beta", [0.0, -1.0, 0.7])
@pytest.mark.parametrize("sparse", [True, False])
@pytest.mark.parametrize("nudge", ["eq5", "after-step"])
def test_fused_relax_equals_eq5_steps(name, beta, sparse, nudge):
    net = _net(TOPOLOGIES[name]())
    net.nudge = nudge
    net.block_sparse = sparse and net.block_sparse
    x, t = _inputs(net, 4)
    drive = net.input_drive(x)
    s = torch.rand(4, net.n_s, dtype=D) * 1.4 - 0.2  # outside [0, 1]: first step is the general one
    ref = s
    for _ in range(25):
        ref = net.step(ref, drive, 0.5, beta, t)
    torch.testing.assert_close(net.relax(s, drive, 25, 0.5, beta, t), ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", TOPOLOGIES)
@pytest.mark.parametrize("beta", [1.0, -1.0, 0.3])
@pytest.mark.parametrize("eps", [0.5, 0.2])
def test_after_step_nudge_is_energy_step_then_cost_step(name, beta, eps):
    """nudge = after-step (the paper's code): an Euler step on E (autograd of eq. 2),
    then one on beta C (autograd of section 3's cost) taken at that result, then the
    clip; from states inside and outside [0, 1]."""
    net = _net(TOPOLOGIES[name]())
    net.nudge = "after-step"
    x, t = _inputs(net, 5)
    g = torch.Generator().manual_seed(11)
    s = torch.rand(5, net.n_s, generator=g, dtype=D) * 1.4 - 0.2
    W, b = net.full()
    s_req = s.clone().requires_grad_(True)
    (dE,) = torch.autograd.grad(energy.energy(torch.cat([x, s_req], 1), W, b).sum(), s_req)
    mid = (s - eps * dE).detach()
    y = mid[:, -net.n_out:].clone().requires_grad_(True)
    (dC,) = torch.autograd.grad(beta * energy.cost(y, t).sum(), y)
    ref = mid.clone()
    ref[:, -net.n_out:] = y.detach() - eps * dC
    ref = ref.clamp(0.0, 1.0)
    torch.testing.assert_close(net.step(s, net.input_drive(x), eps, beta, t), ref, rtol=0, atol=1e-12)
    # The hidden neurons see no nudge; eq5 differs from it on the outputs.
    eq5 = FloatNetwork(net.topology, dtype=D, nudge="eq5")
    eq5.set_full(W, b)
    other = eq5.step(s, eq5.input_drive(x), eps, beta, t)
    out = slice(net.n_s - net.n_out, net.n_s)
    torch.testing.assert_close(other[:, : out.start], ref[:, : out.start], rtol=0, atol=1e-12)
    assert float((other[:, out] - ref[:, out]).abs().max()) > 1e-3


def test_after_step_with_half_eps_and_unit_beta_clamps_to_the_target():
    """eps = 1/2, beta = +1: 2 eps beta = 1, so every weakly-clamped step sets the
    outputs to the target (section 3's implementation); beta = -1 reflects them."""
    net = _net(TOPOLOGIES["skip"]())
    net.nudge = "after-step"
    x, t = _inputs(net, 6)
    drive = net.input_drive(x)
    s0 = net.relax(net.zero_state(6), drive, 40, 0.5)
    sb = net.relax(s0, drive, 3, 0.5, 1.0, t)
    assert torch.equal(net.outputs(sb), t)
    mid = (s0 - 0.5 * net.grad(s0, drive))[:, net.out]
    sneg = net.step(s0, drive, 0.5, -1.0, t)
    torch.testing.assert_close(net.outputs(sneg), (2 * mid - t).clamp(0, 1), rtol=0, atol=1e-12)


def test_unknown_nudge_is_refused():
    with pytest.raises(ValueError, match="nudge: 'late' is not one of after-step, eq5"):
        FloatNetwork(TOPOLOGIES["layered"](), nudge="late")


def test_block_sparse_and_dense_products_agree():
    topo = layered([7, 6, 5, 4])
    a = _net(topo)
    assert a.block_sparse
    b = _net(topo)
    b.block_sparse = False
    x, _ = _inputs(a, 3)
    s = torch.rand(3, a.n_s, dtype=D)
    torch.testing.assert_close(a.feedback(s), b.feedback(s), rtol=0, atol=1e-14)


@pytest.mark.parametrize("name", TOPOLOGIES)
def test_relaxed_state_is_a_fixed_point(name):
    net = _net(TOPOLOGIES[name]())
    x, _ = _inputs(net, 4)
    s = net.relax(net.zero_state(4), net.input_drive(x), 400, 0.5)
    W, b = net.full()
    u = torch.cat([x, s], 1)
    target = (energy.rho(u) @ W + b)[:, net.n_in :].clamp(0, 1)
    torch.testing.assert_close(s, target, rtol=0, atol=1e-10)
    assert 0 < float((s > 0).double().mean()) < 1, "degenerate test: want active and clipped neurons"


def test_free_phase_decreases_energy():
    net = _net(TOPOLOGIES["skip"]())
    x, _ = _inputs(net, 4)
    W, b = net.full()
    drive = net.input_drive(x)
    s = net.zero_state(4)
    Es = []
    for _ in range(30):
        Es.append(energy.energy(torch.cat([x, s], 1), W, b))
        s = net.step(s, drive, 0.5)
    Es = torch.stack(Es)
    assert bool((Es[1:] <= Es[:-1] + 1e-12).all())


@pytest.mark.parametrize("name", TOPOLOGIES)
def test_correction_equals_eq7_per_example(name):
    net = _net(TOPOLOGIES[name]())
    B = 4
    x, t = _inputs(net, B)
    drive = net.input_drive(x)
    s0 = net.relax(net.zero_state(B), drive, 100, 0.5)
    beta = -0.5
    sb = net.relax(s0, drive, 8, 0.5, beta, t)
    corr = net.correction(x, s0, sb, beta)
    # Eq. (7) and (8) literally, one example at a time, over the full u.
    mask = torch.from_numpy(net.topology.mask).to(D)
    dW = torch.zeros(net.topology.n, net.topology.n, dtype=D)
    db = torch.zeros(net.topology.n, dtype=D)
    for k in range(B):
        u0 = energy.rho(torch.cat([x[k], s0[k]]))
        ub = energy.rho(torch.cat([x[k], sb[k]]))
        dW += (torch.outer(ub, ub) - torch.outer(u0, u0)) / beta
        db += (ub - u0) / beta
    dW = dW / B * mask
    db = db / B
    n_in = net.n_in
    torch.testing.assert_close(corr.W_in, dW[:n_in, n_in:], rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(corr.W_ss, dW[n_in:, n_in:], rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(corr.b, db[n_in:], rtol=1e-12, atol=1e-13)
    assert torch.equal(corr.W_ss, corr.W_ss.T)


def _true_gradient(net, x, t, s_star, T=600, eps=0.5):
    """dJ/dtheta, J = C(y*) at the free equilibrium, by backpropagation through
    T relaxation steps from the equilibrium (independent of eq. 7)."""
    topo = net.topology
    mask = torch.from_numpy(topo.mask).to(D)
    W0, b0 = net.full()
    A = torch.triu(W0, 1).clone().requires_grad_(True)  # one parameter per connection
    bp = b0.clone().requires_grad_(True)
    W = (A + A.T) * mask
    s = s_star.detach()
    for _ in range(T):
        u = torch.cat([x, s], 1)
        g = energy.grad_s(u, W, bp, 0.0, t, net.n_in, net.n_out)
        s = (s - eps * g).clamp(0, 1)
    J = energy.cost(s[:, net.out], t).mean()
    gA, gb = torch.autograd.grad(J, [A, bp])
    G = torch.triu(gA, 1)  # A's lower triangle is a (zero) leaf too: keep one entry per connection
    G = G + G.T
    return G * mask, gb


@pytest.mark.parametrize("name", ["layered", "skip"])
def test_eqprop_correction_approaches_true_gradient(name):
    """Small beta, float64: Delta W -> -dJ/dW per layer pair (the EqProp theorem)."""
    net = _net(TOPOLOGIES[name](), bias_scale=0.3)
    B = 3
    x, t = _inputs(net, B, seed=5)
    drive = net.input_drive(x)
    s0 = net.relax(net.zero_state(B), drive, 600, 0.5)
    beta = 1e-5
    sb = net.relax(s0, drive, 600, 0.5, beta, t)
    corr = net.correction(x, s0, sb, beta)
    G, gb = _true_gradient(net, x, t, s0)
    n_in = net.n_in
    eq = torch.zeros_like(G)
    eq[:n_in, n_in:] = corr.W_in
    eq[n_in:, :n_in] = corr.W_in.T
    eq[n_in:, n_in:] = corr.W_ss
    sl = net.topology.slices
    checked = 0
    for a in range(len(sl)):
        for b_ in range(a, len(sl)):
            ref = -G[sl[a], sl[b_]]
            if float(ref.abs().max()) < 1e-8:
                continue
            got = eq[sl[a], sl[b_]]
            rel = float((got - ref).norm() / ref.norm())
            assert rel < 1e-3, f"layers {a}-{b_}: relative error {rel:.2e}"
            checked += 1
    assert checked >= 3
    rel_b = float((corr.b - (-gb[n_in:])).norm() / gb[n_in:].norm())
    assert rel_b < 1e-3


def test_layer_pair_rates_follow_section_3_1():
    rates = [0.128, 0.032, 0.008, 0.002]
    assert layer_pair_rate(rates, 0, 1) == 0.128  # alpha_1: layers 1-2 (1-based)
    assert layer_pair_rate(rates, 3, 4) == 0.002  # alpha_4: last hidden - output
    assert layer_pair_rate(rates, 2, 2) == 0.032  # intralayer in layer 3: as its biases
    assert layer_pair_rate(rates, 0, 3) == 0.008  # skip input -> layer 4
    assert layer_pair_rate([0.02], 0, 4) == 0.02
    net = FloatNetwork(layered([4, 3, 3, 3, 2]), dtype=D)
    lr = net.learning_rates(rates)
    first = lr.W_in[:, net.s_slices[0]]
    assert math.isclose(float(first.max()), 0.128) and math.isclose(float(first.min()), 0.128)
    assert float(lr.W_in[:, net.s_slices[0].stop :].abs().sum()) == 0.0  # no connection, no rate
    assert math.isclose(float(lr.b[net.out].min()), 0.002)
    assert math.isclose(float(lr.b[net.s_slices[0]].max()), 0.128)
    assert float(lr.W_ss[net.s_slices[0], net.s_slices[0]].abs().sum()) == 0.0  # no connection, no rate


def test_apply_keeps_weights_symmetric_and_masked():
    topo = TOPOLOGIES["skip"]()
    net = _net(topo)
    x, t = _inputs(net, 6)
    drive = net.input_drive(x)
    s0 = net.relax(net.zero_state(6), drive, 50, 0.5)
    sb = net.relax(s0, drive, 8, 0.5, 1.0, t)
    net.apply(net.correction(x, s0, sb, 1.0), net.learning_rates([0.1]))
    W, _ = net.full()
    assert torch.equal(W, W.T)
    assert float(W[~torch.from_numpy(topo.mask)].abs().sum()) == 0.0


def test_init_glorot_and_other_ranges():
    topo = layer_skipping([20, 30, 30, 10], n_rewire=200, seed=1)
    net = FloatNetwork(topo, dtype=D).init_params(seed=0)
    W, b = net.full()
    sl = topo.slices
    a = math.sqrt(6 / (20 + 30))
    blk = W[sl[0], sl[1]][torch.from_numpy(topo.pair_mask(0, 1))]
    assert float(blk.abs().max()) <= a and float(blk.abs().max()) > 0.8 * a
    intra = W[sl[1], sl[1]][torch.from_numpy(topo.pair_mask(1, 1))]
    assert 0.04 < float(intra.abs().max()) <= 0.05
    assert float(b.abs().sum()) == 0.0
    net2 = FloatNetwork(topo, dtype=D).init_params(seed=0)
    assert torch.equal(net2.full()[0], W)
