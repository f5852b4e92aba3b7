"""Fixed-point model: agreement with the float model at high precision, refusals
of formats that cannot hold the configuration, hand-made counter cases, runs."""

import json

import pytest
import torch

from eqprop.model.cli import main
from eqprop.model.fixed_net import FixedNetwork, exact_matmul
from eqprop.model.float_net import FloatNetwork
from eqprop.model.numerics import NumericsError, numerics_from_mapping
from eqprop.model.topology import layer_skipping, layered

HIGH = {"state": "fxp-u24/23", "weight": "fxp-s24/20", "bias": "fxp-s24/20", "lr_bits": 10}


@pytest.mark.parametrize("nudge", ["eq5", "after-step"])
@pytest.mark.parametrize("topo", [layered([6, 5, 4, 3]), layer_skipping([6, 5, 4, 3], n_rewire=10, seed=2)])
def test_high_precision_agrees_with_float(topo, nudge):
    """24-bit states and weights: the fixed model tracks the float model on the same
    (quantized) parameters to within a bound derived from the formats' LSBs."""
    B = 3
    num = numerics_from_mapping(HIGH)
    fx = FixedNetwork(topo, num, 0.5, 1.0, B, [0.05], nudge=nudge).init_params(0, other=0.3)
    g = torch.Generator().manual_seed(1)
    fx.b = num.bias.quantize((torch.rand(fx.n_s, generator=g, dtype=torch.float64) - 0.5) * 0.4)
    fx._refresh()
    fl = FloatNetwork(topo, dtype=torch.float64, nudge=nudge)
    fl.set_full(*fx.full_float())  # identical parameters
    fl.set_rates([0.05])
    x = torch.rand(B, topo.sizes[0], generator=g, dtype=torch.float64)
    xq = fx.prepare_inputs(x)
    x_float = num.state.to_float(xq)  # the same quantized inputs
    t = torch.zeros(B, topo.sizes[-1], dtype=torch.float64)
    t[:, 0] = 1
    s0q = fx.relax(fx.zero_state(B), fx.input_drive(xq), 60)
    s0f = fl.relax(fl.zero_state(B), fl.input_drive(x_float), 60, 0.5)
    lsb = num.state.lsb
    # Each step adds at most 1/2 LSB of rounding, damped by (1 - eps) per step:
    # the error stays below (1/2 LSB) / eps * a margin for the coupling through W.
    assert float((num.state.to_float(s0q) - s0f).abs().max()) < 16 * lsb
    sbq = fx.relax(s0q, fx.input_drive(xq), 8, 0.5, -1.0, fx.prepare_targets(t))
    sbf = fl.relax(s0f, fl.input_drive(x_float), 8, 0.5, -1.0, t)
    assert float((num.state.to_float(sbq) - sbf).abs().max()) < 32 * lsb
    W0, b0 = fx.full_float()
    fx.learn(xq, s0q, sbq, -1.0, 0)
    fl.learn(x_float, s0f, sbf, -1.0)
    dWq = fx.full_float()[0] - W0
    dWf = fl.full()[0] - W0
    # Rate multiplier: 10-bit mantissa (relative 2^-10); corrections: state errors
    # times |s| <= 1, doubled by the two phases; plus 1 LSB of the stored weight.
    scale = float(dWf.abs().max())
    assert scale > 1e-4
    bound = 2**-10 * scale + 2 * 2 * 32 * lsb * 0.05 / B + num.weight_store.lsb
    assert float((dWq - dWf).abs().max()) < bound


def test_exact_matmul_splits_wide_weights():
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 2**24 + 1, (3, 700), generator=g)
    b = torch.randint(-(2**39), 2**39, (700, 5), generator=g)
    ref = (a[:, :, None] * b[None]).sum(1)  # exact int64 (no overflow: < 2^24 * 2^39 * 2^10)
    assert torch.equal(exact_matmul(a, b, 2**24, 40), ref)


@pytest.mark.parametrize(
    "fixed,eps,beta,needle",
    [
        ({"state": "fxp-u8/8"}, 0.5, 1.0, "state: fxp-u8/8 cannot represent 1"),
        ({"state": "fxp-s8/6"}, 0.5, 1.0, "state: fxp-s8/6 must be unsigned"),
        ({"weight": "fxp-u8/6"}, 0.5, 1.0, "weight:"),
        ({"weight": "fxp-s8/6", "weight_store": "fxp-s12/4"}, 0.5, 1.0, "weight_store"),
        ({"acc": 12}, 0.5, 1.0, "acc: 12 bits is too narrow for fan-in"),
        ({}, 0.3, 1.0, "eps: 0.3 is not a power of two"),
        ({}, 0.5, 0.7, "beta: 0.7 is not a power of two"),
        ({"bias": "fxp-s20/19"}, 0.5, 1.0, "bias:"),
        ({"rounding": "up"}, 0.5, 1.0, "rounding:"),
        ({"sate": 8}, 0.5, 1.0, "sate: unknown fixed-point key"),
        ({"state": "fxp-u30/29", "lr_bits": 16}, 0.5, 1.0, "batch_size"),
        # fa - fS + 1 + m = 13 - 7 + 1 - 8 < 0: the nudge of a one-LSB error would vanish
        ({}, 0.5, 2.0**-8, "beta: 0.00390625 is too small"),
    ],
)
def test_formats_that_cannot_hold_the_configuration_are_refused(fixed, eps, beta, needle):
    with pytest.raises(NumericsError, match=None) as ei:
        num = numerics_from_mapping(fixed)
        FixedNetwork(layered([16, 8, 10]), num, eps, beta, 20, [0.1])
    assert needle in str(ei.value), str(ei.value)
    assert "\n" not in str(ei.value)


def test_narrow_accumulator_allowed_with_saturation():
    num = numerics_from_mapping({"acc": 12, "acc_overflow": "saturate"})
    net = FixedNetwork(layered([16, 8, 10]), num, 0.5, 1.0, 20, [0.1])
    assert net.acc_fmt.n_word == 12


def _tiny(num_map, rate):
    """Layered 1-1-1 network: connections (0,1) input-hidden and (1,2) hidden-output."""
    num = numerics_from_mapping({"state": 8, "weight": 8, "bias": 12, **num_map})
    return FixedNetwork(layered([1, 1, 1]), num, 0.5, 1.0, 1, [rate])


def test_zero_correction_counter_hand_case():
    # x = 1.0, s0 = (h .5, y 0), s^beta = (h .5, y 1 LSB): D_(1,2) = 64 * 1 at
    # fraction 14 = 2^-8; D_(0,1) = 0 (not counted). alpha = 0.5: dW = 2^-9, below
    # half an LSB of fxp-s8/6 (2^-7): rounds to 0 under nearest-even and floor.
    xq = torch.tensor([[128]])
    s0 = torch.tensor([[64, 0]])
    sb = torch.tensor([[64, 1]])
    for mode in ("nearest-even", "floor"):
        net = _tiny({"rounding": mode}, 0.5)
        st = net.learn(xq, s0, sb, 1.0, 0)
        assert st.nonzero_d == [0, 1] and st.zero == [0, 1]
        assert int(net.W_ss[0, 1]) == 0
    # alpha = 8: dW = 2^-5 = 2 LSB exactly; nothing rounds away.
    net = _tiny({"rounding": "nearest-even"}, 8.0)
    st = net.learn(xq, s0, sb, 1.0, 0)
    assert st.zero == [0, 0] and int(net.W_ss[0, 1]) == 2 and int(net.W_ss[1, 0]) == 2
    # beta < 0 flips the sign of the same change.
    net = _tiny({"rounding": "nearest-even"}, 8.0)
    net.learn(xq, s0, sb, -1.0, 0)
    assert int(net.W_ss[0, 1]) == -2


def test_saturation_counters_hand_case():
    net = _tiny({"rounding": "nearest-even"}, 8.0)
    net.W_ss[0, 1] = net.W_ss[1, 0] = 126  # max is 127; +2 saturates
    net._refresh()
    st = net.learn(torch.tensor([[128]]), torch.tensor([[64, 0]]), torch.tensor([[64, 1]]), 1.0, 0)
    assert st.weight_saturations == 1
    assert int(net.W_ss[0, 1]) == 127 and net.saturated_weights() == 1
    # The output bias: D_b = 1 LSB of state (2^-7) * 8 = 2^-4 = 32 LSB of fxp-s12/9.
    assert int(net.b[1]) == 32 and st.bias_saturations == 0


def test_mac_weight_is_the_floor_of_the_stored_weight():
    num = numerics_from_mapping({"weight": "fxp-s6/4", "weight_store": "fxp-s12/8"})
    net = FixedNetwork(layered([1, 1, 1]), num, 0.5, 1.0, 1, [0.1])
    net.W_ss[0, 1] = net.W_ss[1, 0] = -260  # -260/256 = -1.015625 -> floor(-16.25)/16 = -17/16
    net.W_in[0, 0] = 2047  # 7.996 in fxp-s12/8: 127/16 saturates to 31/16 in fxp-s6/4
    net._refresh()
    assert int(net.Wm_ss[0, 1]) == -17 and int(net.Wm_in[0, 0]) == 31


SMALL = ["--downsample", "14", "--sizes", "196-16-12-10", "--train-size", "200", "--eval-size", "100",
         "--free-steps", "12", "--nudged-steps", "4", "--lr", "0.1", "--no-progress", "--model", "fixed",
         "--bits", "state=8,weight=8,bias=12"]


def test_fixed_run_resume_equals_uninterrupted_stochastic(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["train", *SMALL, "--rounding", "stochastic", "--epochs", "2", "--out", str(a)]) == 0
    assert main(["train", *SMALL, "--rounding", "stochastic", "--epochs", "1", "--out", str(b)]) == 0
    assert main(["train", "--out", str(b), "--resume", "--epochs", "2", "--no-progress"]) == 0
    ma = [json.loads(l) for l in (a / "metrics.jsonl").read_text().splitlines()]
    mb = [json.loads(l) for l in (b / "metrics.jsonl").read_text().splitlines()]
    for r in ma + mb:
        r.pop("seconds")
    assert ma == mb
    assert "zero_corrections" in ma[0] and "saturated_weights" in ma[0]
    ca = torch.load(a / "checkpoint.pt", weights_only=False)
    cb = torch.load(b / "checkpoint.pt", weights_only=False)
    assert all(torch.equal(ca["net"][k], cb["net"][k]) for k in ca["net"])
    assert ca["net"]["W_ss"].dtype == torch.int64
    cfg = (a / "config.toml").read_text()
    assert '[fixed]' in cfg and 'state = "fxp-u8/7"' in cfg and 'rounding = "stochastic"' in cfg


def test_fixed_bad_bits_flag(tmp_path, capsys):
    assert main(["train", *SMALL, "--bits", "state=fxp-u8/8", "--out", str(tmp_path / "x")]) == 2
    assert "state: fxp-u8/8 cannot represent 1" in capsys.readouterr().err
    assert main(["train", *SMALL, "--eps", "0.3", "--out", str(tmp_path / "x")]) == 2
    assert "eps: 0.3" in capsys.readouterr().err
    assert main(["train", *SMALL, "--bits", "state", "--out", str(tmp_path / "x")]) == 2
    assert "bits:" in capsys.readouterr().err


def test_numerics_command_prints_formats(capsys):
    assert main(["numerics", "--sizes", "784-500-10", "--topology", "layered", "--bits", "state=8,weight=8"]) == 0
    out = capsys.readouterr().out
    assert "fxp-u8/7" in out and "fxp-s8/6" in out and "accumulator" in out
