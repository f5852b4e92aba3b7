"""The settle rule (docs/numerics.md §4a) in the models: fast fixed-point = golden twin =
a step-by-step reading of the rule, per example, in any batch; unchanged states with
settle_tol = 0 and deterministic rounding; the float model; configuration errors."""

import json

import pytest
import torch

from eqprop.model import config as config_mod
from eqprop.model.cli import main
from eqprop.model.config import ConfigError, TrainConfig
from eqprop.model.fixed_net import FixedNetwork
from eqprop.model.float_net import FloatNetwork
from eqprop.model.golden import GoldenNetwork
from eqprop.model.numerics import numerics_from_mapping
from eqprop.model.settle import SettleRule
from eqprop.model.topology import layer_skipping, layered
from eqprop.model.train import Run

I64 = torch.int64
N = 40  # free steps: enough for most examples of the small nets to settle


def _fixed(rounding: str, seed: int = 3, topo=None):
    topo = topo or layer_skipping([6, 5, 4, 3], n_rewire=8, mode="replace", seed=1)
    num = numerics_from_mapping({"rounding": rounding, "state": 6, "weight": 8, "bias": 10})
    net = FixedNetwork(topo, num, 0.5, 1.0, 6, [1.0], nudge="after-step")
    net.init_params(seed, other=0.4)
    g = torch.Generator().manual_seed(seed)
    one = num.state.one()
    x = torch.randint(0, one + 1, (6, net.n_in), generator=g, dtype=I64)
    s = torch.randint(0, one + 1, (6, net.n_s), generator=g, dtype=I64)
    s[0] = 0
    return net, x, s


def _by_hand(net, x, s, n, rule, bases):
    """§4a read literally: one example at a time, one single-step relax at a time."""
    d = net.input_drive(x)
    states, counts = [], []
    for e in range(x.shape[0]):
        cur, quiet, taken = s[e:e + 1], 0, n
        for t in range(n):
            new = net.relax(cur, d[e:e + 1], 1, event_base=bases[e:e + 1] + t * net.n_s)
            quiet = quiet + 1 if int((new - cur).abs().max()) <= rule.tol else 0
            cur = new
            if quiet >= rule.steps:
                taken = t + 1
                break
        states.append(cur)
        counts.append(taken)
    return torch.cat(states), counts


def _golden(net):
    N_ = net.topology.n
    W = torch.zeros(N_, N_, dtype=I64)
    W[:net.n_in, net.n_in:] = net.W_in
    W[net.n_in:, :net.n_in] = net.W_in.T
    W[net.n_in:, net.n_in:] = net.W_ss
    b = torch.zeros(N_, dtype=I64)
    b[net.n_in:] = net.b
    return GoldenNetwork.from_fixed_params(net.topology, net.num, net.eps, 1.0, net.batch_size, net.rates,
                                           W.tolist(), b.tolist(), net.nudge)


@pytest.mark.parametrize("rounding,tol,steps", [
    ("nearest-even", 0, 1), ("floor", 0, 2), ("nearest-even", 1, 1), ("stochastic", 0, 1), ("stochastic", 1, 3),
])
def test_fast_equals_golden_equals_the_rule_by_hand(rounding, tol, steps):
    net, x, s = _fixed(rounding)
    rule = SettleRule(tol, steps)
    bases = torch.arange(6, dtype=I64) * 1000 + 7
    fast = net.relax(s, net.input_drive(x), N, event_base=bases, settle=rule)
    counts = net.last_steps.tolist()
    hand, hand_counts = _by_hand(net, x, s, N, rule, bases)
    assert counts == hand_counts and torch.equal(fast, hand)
    assert min(counts) < N  # some examples settled early: the comparison is not trivial
    gold = _golden(net)
    for e in range(x.shape[0]):
        got = gold.relax(x[e].tolist(), s[e].tolist(), N, event_base=int(bases[e]), settle=rule)
        assert got == fast[e].tolist() and gold.last_steps == counts[e], f"example {e}"
    # Each example stops on its own: the same states and counts in any batch order.
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    again = net.relax(s[perm], net.input_drive(x[perm]), N, event_base=bases[perm], settle=rule)
    assert torch.equal(again, fast[perm]) and net.last_steps.tolist() == [counts[i] for i in perm]


@pytest.mark.parametrize("rounding", ["nearest-even", "floor"])
def test_deterministic_rounding_tol_0_changes_no_state(rounding):
    """A quiet step is a fixed point: the rule keeps the full phase's states (§4a)."""
    net, x, s = _fixed(rounding, seed=5)
    d = net.input_drive(x)
    full = net.relax(s, d, N)
    ruled = net.relax(s, d, N, settle=SettleRule(0, 1))
    assert torch.equal(full, ruled) and net.last_steps.max() < N


def test_stochastic_rounding_is_an_early_exit():
    """With stochastic state rounding a quiet step is not a fixed point: the kept state
    is step t's (the test above and this one together show what the rule means)."""
    net, x, s = _fixed("stochastic", seed=6)
    d, bases = net.input_drive(x), torch.arange(6, dtype=I64) * 1000
    ruled = net.relax(s, d, N, event_base=bases, settle=SettleRule(0, 1))
    counts = net.last_steps
    assert (counts < N).any()
    full = net.relax(s, d, N, event_base=bases)
    assert not torch.equal(full, ruled)


def test_weakly_clamped_phase_has_no_rule():
    net, x, s = _fixed("nearest-even")
    t = torch.zeros(6, net.n_out, dtype=I64)
    with pytest.raises(Exception, match="settle"):
        net.relax(s, net.input_drive(x), 4, beta=1.0, target=t, settle=SettleRule())


def test_float_rule_matches_its_reading_and_tol_0_is_exact():
    topo = layered([6, 5, 4, 3])
    net = FloatNetwork(topo, dtype=torch.float64).init_params(2, adjacent=1.2)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 6, generator=g, dtype=torch.float64)
    s = torch.rand(5, net.n_s, generator=g, dtype=torch.float64) * 1.4 - 0.2  # some outside [0, 1]
    d = net.input_drive(x)
    rule = SettleRule(1e-6, 2)
    got = net.relax(s, d, 200, 0.5, settle=rule)
    counts = net.last_steps.tolist()
    for e in range(5):  # by hand, one step at a time with the plain Euler step
        cur, quiet, taken = s[e:e + 1], 0, 200
        for t in range(200):
            new = net.step(cur, d[e:e + 1], 0.5)
            quiet = quiet + 1 if float((new - cur).abs().max()) <= rule.tol else 0
            cur = new
            if quiet >= rule.steps:
                taken = t + 1
                break
        assert taken == counts[e]
        assert torch.allclose(got[e], cur[0], atol=1e-12, rtol=0)
    assert max(counts) < 200
    full = net.relax(s, d, 200, 0.5)
    assert (got - full).abs().max() < 1e-4  # settled within the tolerance's reach
    # tol = 0: a float fixed point is a fixed point too
    exact = net.relax(s, d, 2000, 0.5, settle=SettleRule(0.0, 1))
    assert torch.allclose(exact, net.relax(s, d, 2000, 0.5), atol=0, rtol=0)


# ----------------------------------------------------------- configuration
@pytest.mark.parametrize("values,needle", [
    ({"settle_tol": -1.0}, "settle_tol: must be >= 0"),
    ({"settle_steps": 0}, "settle_steps: must be >= 1"),
    ({"model": "fixed", "settle_tol": 0.5}, "whole state LSBs"),
    ({"model": "fixed", "settle_tol": 256.0}, "whole state range"),
    ({"settle_tol": 1.0}, "whole state range"),
    ({"settle_steps": 600}, "can never end a phase"),
    ({"eval_free_steps": 3, "settle_steps": 5, "free_steps": 10}, "eval_free_steps = 3"),
])
def test_bad_settle_values_are_refused(values, needle):
    with pytest.raises(ConfigError, match=needle):
        config_mod.validate(config_mod.from_mapping(values))


def test_bad_settle_flag_is_one_line_exit_2(capsys):
    assert main(["train", "--settle-tol", "-1", "--no-progress", "--out", "/nonexistent/x"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "settle_tol" in err


def test_rule_off_is_allowed_with_any_steps():
    config_mod.validate(config_mod.from_mapping({"settle": False, "settle_steps": 600}))
    assert config_mod.settle_rule(TrainConfig(settle=False)) is None
    assert config_mod.settle_rule(TrainConfig(model="fixed", settle_tol=2.0)) == SettleRule(2, 1)


def test_old_run_directory_loads_with_the_rule_off(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("")
    (run / "config.toml").write_text('[train]\nmodel = "float"\n')
    assert config_mod.load_toml(run / "config.toml").settle is False
    plain = tmp_path / "plain.toml"
    plain.write_text('[train]\nmodel = "float"\n')
    assert config_mod.load_toml(plain).settle is True


def test_training_with_the_rule_equals_training_without_but_for_the_counts(tmp_path):
    """Deterministic fixed point, settle_tol = 0: identical weights and metrics, fewer steps."""
    base = {"model": "fixed", "downsample": 7, "sizes": [49, 12, 10], "topology": "skip", "n_rewire": 6,
            "train_size": 40, "batch_size": 8, "eval_size": 20, "free_steps": 40, "nudged_steps": 3,
            "epochs": 2, "lr": [0.1], "eval_particles": True, "fixed": {"rounding": "nearest-even"}}
    rows, cks = {}, {}
    for on in (False, True):
        cfg = config_mod.validate(config_mod.from_mapping({**base, "settle": on}))
        out = tmp_path / f"run-{on}"
        Run(cfg, out).train(progress=False, log=lambda *a, **k: None)
        rows[on] = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        cks[on] = torch.load(out / "checkpoint.pt", weights_only=False)
    for k in ("W_in", "W_ss", "b"):
        assert torch.equal(cks[False]["net"][k], cks[True]["net"][k])
    assert torch.equal(cks[False]["particles"], cks[True]["particles"])
    for a, b in zip(rows[False], rows[True]):
        assert a["free_steps_mean"] == 40 and a["free_steps_max"] == 40 and a["eval_steps_mean"] == 40
        assert b["free_steps_mean"] < 40
        for k in a:
            if k not in ("seconds", "free_steps_mean", "free_steps_max", "eval_steps_mean", "eval_steps_max"):
                assert a[k] == b[k], k
