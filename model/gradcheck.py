"""Gradient alignment: how close EqProp's correction is to the true gradient.

    eqprop gradcheck RUN_DIR [--examples N] [--bits 8 6 state=5,weight=5,bias=9 ...]
                             [--rounding MODE] [--beta B] [--nudged-steps N] [--method implicit|bptt] [--json FILE]

On a fixed batch (the first N training images of the run's data), at the free
equilibrium of the run's network (its last checkpoint), per adjacent layer
pair (and all other connections together, e.g. the layer-skipping ones):

* the true gradient dJ/dW of the cost J = mean over the batch of
  C = ||y - y_d||^2 (section 3's cost) at the free equilibrium, computed
  independently of eqs. 7-8: by implicit differentiation at the fixed point
  (default; exact at an equilibrium: the interior units satisfy
  s = W s + drive + b, so (I - W_FF) ds_F = d(rhs), one linear solve per
  example), or by backpropagation through relaxation steps with autograd
  (``--method bptt``, what tests/test_float_model.py does);
* the EqProp correction Delta W of eqs. 7-8 (float, float64) with the run's
  beta (positive sign), nudge ordering and weakly-clamped steps;
* for a fixed-point run, and for each ``--bits`` format (the run's weights
  quantized nearest-even, as ``eqprop hdl generate --bits`` does), the
  fixed-point correction of docs/numerics.md §6 computed at the fixed-point
  free and weakly-clamped states: *before rounding* (the exact sum D / (beta B)
  of the quantized states) and *after rounding* to the stored-weight LSB
  (what an update writes, divided by the represented rate c |beta| B so that
  it is in Delta W's units; the batch is split into the run's batches, each
  rounded as one update of training would be, all from the same weights).

For each: cos(Delta W, -dJ/dW) and the norm ratio |Delta W| / |dJ/dW| per
pair (1 and 1 when EqProp gives the gradient: the paper's theorem as
beta -> 0), and after rounding the fraction of connections with a nonzero
exact correction that rounded to zero. A table is printed and the numbers
are written as JSON (RUN_DIR/gradcheck.json unless ``--json``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from . import config as config_mod
from .energy import cost, rho
from .float_net import full_matrix

F64 = torch.float64
# The float free phase runs until no state moves by more than this (or MAX_STEPS).
SETTLE_TOL = 1e-12
MAX_STEPS = 5000


# ------------------------------------------------------------------ the truth
def free_equilibrium(fnet, x: torch.Tensor, max_steps: int = MAX_STEPS, tol: float = SETTLE_TOL):
    """Relax a float64 FloatNetwork from the zero state until settled; (s, drive, residual)."""
    from .settle import SettleRule

    drive = fnet.input_drive(x)
    s = fnet.relax(fnet.zero_state(x.shape[0]), drive, max_steps, 0.5, settle=SettleRule(tol, 3))
    resid = float((s - (s - fnet.grad(s, drive)).clamp(0, 1)).abs().max()) if s.numel() else 0.0
    return s, drive, resid


def implicit_gradient(fnet, x: torch.Tensor, t: torch.Tensor, s: torch.Tensor, chunk: int = 32):
    """dJ/dW (full (N, N), symmetric, masked: entry (i, j) is dJ/dw_ij of connection i-j) and
    dJ/db (N,) of J = mean_b ||y_b - y_d,b||^2 at the free equilibrium s, by implicit
    differentiation. A unit strictly inside (0, 1) is free and satisfies s_i = (W rho(u))_i + b_i;
    a unit at 0 or 1 is held there by the clip and does not move with the parameters. With F the
    free units, (I - W_FF) lambda_F = dJ/ds_F, and dJ/dw_ij = lambda_i rho(u_j) + lambda_j rho(u_i),
    dJ/db_i = lambda_i (lambda = 0 off F and on the inputs)."""
    n_in, n_s, B = fnet.n_in, fnet.n_s, x.shape[0]
    W_ss = fnet.W_ss.to(F64)
    lam = torch.zeros(B, n_s, dtype=F64)
    for i in range(0, B, chunk):
        si = s[i : i + chunk].to(F64)
        f = ((si > 0) & (si < 1)).to(F64)
        g = torch.zeros_like(si)
        g[:, fnet.out] = 2.0 * (si[:, fnet.out] - t[i : i + chunk].to(F64)) / B
        A = torch.eye(n_s, dtype=F64) - f[:, :, None] * W_ss[None] * f[:, None, :]
        lam[i : i + chunk] = torch.linalg.solve(A, (g * f)[:, :, None])[:, :, 0]
    u = rho(torch.cat([x.to(F64), s.to(F64)], 1))
    lam_full = torch.cat([torch.zeros(B, n_in, dtype=F64), lam], 1)
    G = lam_full.T @ u
    G = (G + G.T) * torch.from_numpy(fnet.topology.mask).to(F64)
    gb = lam_full.sum(0)
    return G, gb


def bptt_gradient(fnet, x: torch.Tensor, t: torch.Tensor, s: torch.Tensor, steps: int = 600, eps: float = 0.5):
    """dJ/dW and dJ/db (as ``implicit_gradient``) by backpropagation through ``steps`` steps of
    eq. 5 taken from the equilibrium s, with autograd (independent of eqs. 7-8 and of the solve)."""
    from .energy import grad_s

    mask = torch.from_numpy(fnet.topology.mask).to(F64)
    W0, b0 = (v.to(F64) for v in fnet.full())
    A = torch.triu(W0, 1).clone().requires_grad_(True)  # one parameter per connection
    bp = b0.clone().requires_grad_(True)
    W = (A + A.T) * mask
    x = x.to(F64)
    st = s.detach().to(F64)
    with torch.enable_grad():
        for _ in range(steps):
            g = grad_s(torch.cat([x, st], 1), W, bp, 0.0, None, fnet.n_in, fnet.n_out)
            st = (st - eps * g).clamp(0, 1)
        J = cost(st[:, fnet.out], t.to(F64)).mean()
        gA, gb = torch.autograd.grad(J, [A, bp])
    G = torch.triu(gA, 1)
    return (G + G.T) * mask, gb


def equilibrium_cost(fnet, x, t, start=None, steps: int = MAX_STEPS) -> float:
    """J = mean ||y - y_d||^2 at the free equilibrium reached from ``start`` (or zero)."""
    from .settle import SettleRule

    drive = fnet.input_drive(x)
    s0 = fnet.zero_state(x.shape[0]) if start is None else start.clone()
    s = fnet.relax(s0, drive, steps, 0.5, settle=SettleRule(SETTLE_TOL, 3))
    return float(cost(s[:, fnet.out], t.to(F64)).mean())


def finite_difference_check(fnet, x, t, s, G, gb, n_params: int = 6, h: float = 1e-5, seed: int = 0,
                            tol: float = 1e-3) -> tuple[bool, float, list]:
    """Check a claimed gradient (G, gb) of J against central differences of J (each parameter
    moved by +-h, the network re-relaxed from the equilibrium s) on ``n_params`` connections
    and one bias, those with the largest claimed gradient and random ones. Returns (ok, the
    largest error relative to the largest |fd| seen, [(what, claimed, fd)])."""
    W, b = (v.to(F64).clone() for v in fnet.full())
    iu, ju = torch.nonzero(torch.triu(torch.from_numpy(fnet.topology.mask), 1), as_tuple=True)
    g = torch.Generator().manual_seed(seed)
    big = torch.topk(G[iu, ju].abs(), min(n_params // 2, len(iu))).indices
    rnd = torch.randperm(len(iu), generator=g)[: n_params - len(big)]
    picks = [("w", int(iu[k]), int(ju[k])) for k in torch.cat([big, rnd]).tolist()]
    bi = int(torch.argmax(gb.abs()))
    picks.append(("b", bi, bi))
    rows = []
    for kind, i, j in picks:
        vals = []
        for sgn in (1, -1):
            W2, b2 = W.clone(), b.clone()
            if kind == "w":
                W2[i, j] += sgn * h
                W2[j, i] += sgn * h
            else:
                b2[i] += sgn * h
            fnet.set_full(W2, b2)
            vals.append(equilibrium_cost(fnet, x, t, s))
        fd = (vals[0] - vals[1]) / (2 * h)
        rows.append((f"{kind}[{i},{j}]", float(G[i, j] if kind == "w" else gb[i]), fd))
    fnet.set_full(W, b)
    scale = max(max(abs(r[2]) for r in rows), 1e-300)
    err = max(abs(r[1] - r[2]) for r in rows) / scale
    return err < tol, err, rows


# ------------------------------------------------------------- comparisons
def pair_groups(topology) -> list[tuple[str, torch.Tensor]]:
    """(name, boolean (N, N) upper-triangle mask) per adjacent layer pair ("0-1", ...), then
    "other" for every connection that is not between adjacent layers (when there are any)."""
    mask = torch.triu(torch.from_numpy(topology.mask).bool(), 1)
    sl = topology.slices
    groups, used = [], torch.zeros_like(mask)
    for l in range(len(sl) - 1):
        m = torch.zeros_like(mask)
        m[sl[l], sl[l + 1]] = True
        m &= mask
        used |= m
        groups.append((f"{l}-{l + 1}", m))
    rest = mask & ~used
    if rest.any():
        groups.append(("other", rest))
    return groups


def compare(dW: torch.Tensor, G: torch.Tensor, groups) -> tuple[list, list]:
    """Per group: cos(dW, -G) and |dW| / |G| (nan where G is zero on the group)."""
    cos, ratio = [], []
    for _, m in groups:
        a, r = dW[m].to(F64), -G[m].to(F64)
        na, nr = float(a.norm()), float(r.norm())
        cos.append(float(a @ r) / (na * nr) if na > 0 and nr > 0 else (0.0 if nr > 0 else math.nan))
        ratio.append(na / nr if nr > 0 else math.nan)
    return cos, ratio


def float_correction(fnet, x, t, s0, drive, beta: float, steps: int) -> torch.Tensor:
    """Eqs. 7-8 (full (N, N) Delta W) from the free equilibrium s0."""
    sb = fnet.relax(s0.clone(), drive, steps, 0.5, beta, t.to(F64))
    c = fnet.correction(x, s0, sb, beta)
    return full_matrix(c.W_in, c.W_ss, F64)


def rate_matrix(fx) -> torch.Tensor:
    """The represented multiplier c = M 2^-E of every connection, full (N, N)."""
    sl = fx.topology.slices
    C = torch.zeros(fx.topology.n, fx.topology.n, dtype=F64)
    for a in range(len(sl)):
        for b in range(a, len(sl)):
            if (a, b) in fx.mult:
                C[sl[a], sl[b]] = fx.mult[(a, b)].value
                C[sl[b], sl[a]] = fx.mult[(a, b)].value
    return C


def fixed_corrections(fx, cfg, x, t, examples_base: int = 0):
    """The fixed-point correction before and after rounding, both full (N, N) in Delta W units,
    and per connection the count of updates (batches of the run's size) whose exact correction was
    nonzero and how many of them rounded to zero (training's zero_corrections)."""
    n = fx.num
    lsb_s = n.state.lsb
    xq_all, tq_all = fx.prepare_inputs(x.float()), fx.prepare_targets(t)
    B, N = x.shape[0], fx.topology.n
    stride = (cfg.free_steps + cfg.nudged_steps) * fx.n_s
    settle = config_mod.settle_rule(cfg)
    D_sum = torch.zeros(N, N, dtype=F64)
    applied = torch.zeros(N, N, dtype=F64)
    zero = torch.zeros(N, N, dtype=torch.int64)  # per connection: updates that rounded a nonzero D to 0
    live = torch.zeros(N, N, dtype=torch.int64)  # per connection: updates with a nonzero D
    saved = {k: v.clone() for k, v in fx.state_dict().items()}
    bs = fx.batch_size
    for k, i in enumerate(range(0, B, bs)):
        xq, tq = xq_all[i : i + bs], tq_all[i : i + bs]
        e = examples_base + i + torch.arange(xq.shape[0], dtype=torch.int64)
        drive = fx.input_drive(xq)
        s0 = fx.relax(fx.zero_state(xq.shape[0]), drive, cfg.free_steps, event_base=e * stride, settle=settle)
        sb = fx.relax(s0, drive, cfg.nudged_steps, fx.eps, fx.beta_abs, tq,
                      event_base=e * stride + cfg.free_steps * fx.n_s)
        D_in, D_ss, _ = fx.corrections(xq, s0, sb)
        D = full_matrix(D_in, D_ss, F64)
        D_sum += D
        w_in, w_ss = fx.W_in.clone(), fx.W_ss.clone()
        fx.learn(xq, s0, sb, fx.beta_abs, k)
        dW = full_matrix(fx.W_in - w_in, fx.W_ss - w_ss, F64)
        applied += dW * n.weight_store.lsb
        live += (D != 0).to(torch.int64)
        zero += ((D != 0) & (dW == 0)).to(torch.int64)
        fx.load_state_dict(saved)
    pre = D_sum * lsb_s * lsb_s / (fx.beta_abs * B)
    C = rate_matrix(fx)
    post = torch.where(C > 0, applied / (C * fx.beta_abs * B).clamp_min(1e-300), torch.zeros_like(applied))
    return pre, post, zero, live


def _bits_mapping(spec: str, rounding: str | None) -> dict:
    from .numerics import parse_bits

    if spec.isdigit():
        b = int(spec)
        m = {"state": b, "weight": b, "bias": b + 4}
    else:
        m = parse_bits(spec)
    if rounding:
        m["rounding"] = rounding
    return m


def gradcheck(run_dir, examples: int = 100, bits: list[str] | None = None, rounding: str | None = None,
              beta: float | None = None, nudged_steps: int | None = None, method: str = "implicit") -> dict:
    """The measurement (see the module docstring) as a dict (what the JSON holds)."""
    from .fixed_net import FixedNetwork
    from .float_net import FloatNetwork
    from .train import load_data, load_run, make_network

    cfg, net, ck = load_run(run_dir)
    n_ex = min(examples, cfg.train_size)
    data = load_data(cfg, "train", n_ex)
    x = torch.from_numpy(data.x).to(F64)
    t = torch.zeros(len(data), cfg.sizes[-1], dtype=F64)
    t[torch.arange(len(data)), torch.from_numpy(data.y)] = 1.0
    beta_f = cfg.beta if beta is None else beta
    steps_b = cfg.nudged_steps if nudged_steps is None else nudged_steps
    topo = net.topology
    groups = pair_groups(topo)
    fixed_run = getattr(net, "is_fixed", False)
    cache: dict = {}

    def truth(key, W, b):
        """Float64 network with these weights: equilibrium, true gradient, float correction."""
        if key not in cache:
            fnet = FloatNetwork(topo, dtype=F64, nudge=cfg.nudge)
            fnet.set_full(W, b)
            s0, drive, resid = free_equilibrium(fnet, x)
            G, gb = (implicit_gradient if method == "implicit" else bptt_gradient)(fnet, x, t, s0)
            dW = float_correction(fnet, x, t, s0, drive, beta_f, steps_b)
            cos, ratio = compare(dW, G, groups)
            cache[key] = {"residual": resid, "steps_mean": float(fnet.last_steps.double().mean()),
                          "grad_norm": [float(G[m].norm()) for _, m in groups],
                          "cost": float(cost(s0[:, fnet.out], t).mean()), "G": G,
                          "float": {"cos": cos, "ratio": ratio}}
        return cache[key]

    series = []
    if fixed_run:
        W, b = net.full_float(mac=True)
        variants = [("run", cfg, net)]
    else:
        W, b = (v.to(F64) for v in net.full())
        variants = []
    ref = truth("run", W, b)
    series.append({"name": "float" if not fixed_run else "float (MAC weights)", "kind": "float",
                   "weights": "run", **ref["float"]})
    for spec in bits or []:
        c2 = config_mod.from_mapping({}, cfg)
        c2.model = "fixed"
        c2.fixed = {**(cfg.fixed if fixed_run else {}), **_bits_mapping(spec, rounding)}
        config_mod.validate(c2)
        fx = make_network(c2, topo)
        fx.load_float(*(net.full_float() if fixed_run else net.full()))
        variants.append((spec, c2, fx))
    truths = {}
    for name, c2, fx in variants:
        assert isinstance(fx, FixedNetwork)
        Wm, bm = fx.full_float(mac=True)
        tr = truth(name, Wm, bm)
        if name != "run":
            series.append({"name": f"float ({name})", "kind": "float", "weights": name, **tr["float"]})
        truths[name] = {k: tr[k] for k in ("residual", "steps_mean", "grad_norm", "cost")}
        pre, post, zero, live = fixed_corrections(fx, c2, x, t)
        fmt = fx.num.to_dict()
        label = "run's formats" if name == "run" else name
        desc = (f"state {fmt['state']}, weight {fmt['weight']}, store {fmt['weight_store']}, "
                f"rounding {fmt['rounding']}/{fmt['state_rounding']}")
        for kind, dW in (("before rounding", pre), ("after rounding", post)):
            cos, ratio = compare(dW, tr["G"], groups)
            row = {"name": f"fixed {label}, {kind}", "kind": f"fixed {kind}", "weights": name, "formats": desc,
                   "cos": cos, "ratio": ratio}
            if kind == "after rounding":
                row["zero"] = [float(zero[m].sum()) / max(float(live[m].sum()), 1.0) for _, m in groups]
            series.append(row)
    return {"run": str(run_dir), "epoch": ck["epoch"], "examples": len(data), "method": method,
            "beta": beta_f, "nudged_steps": steps_b, "nudge": cfg.nudge, "pairs": [g[0] for g in groups],
            "connections": [int(m.sum()) for _, m in groups],
            "truth": {"cost": ref["cost"], "residual": ref["residual"], "steps_mean": ref["steps_mean"],
                      "grad_norm": ref["grad_norm"], **({"variants": truths} if truths else {})},
            "series": series}


def table(res: dict) -> str:
    pairs = res["pairs"]
    tr = res["truth"]
    lines = [f"{res['run']}: epoch {res['epoch']}, {res['examples']} training images, true gradient by "
             f"{res['method']} differentiation at the free equilibrium (max residual {tr['residual']:.1e}, "
             f"{tr['steps_mean']:.0f} steps), J = {tr['cost']:.4f}; EqProp with beta = {res['beta']:g}, "
             f"{res['nudged_steps']} weakly-clamped steps ({res['nudge']})",
             "cos(dW, -dJ/dW) / |dW|/|dJ/dW|" + " per layer pair; after rounding also the share of nonzero "
             "corrections rounded to 0",
             "", "| correction | " + " | ".join(f"{p} ({c})" for p, c in zip(pairs, res["connections"])) + " |",
             "|" + " --- |" * (1 + len(pairs)),
             "| \\|dJ/dW\\| | " + " | ".join(f"{g:.2e}" for g in tr["grad_norm"]) + " |"]
    for s in res["series"]:
        cells = []
        for i in range(len(pairs)):
            c = f"{s['cos'][i]:.3f} / {s['ratio'][i]:.3g}"
            if "zero" in s:
                c += f" / {100 * s['zero'][i]:.0f}%"
            cells.append(c)
        lines.append(f"| {s['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ command
def add_parser(sub):
    g = sub.add_parser("gradcheck", help="EqProp's correction against the true gradient, per layer pair")
    g.add_argument("run_dir")
    g.add_argument("--examples", type=int, default=100, help="first N training images (default 100)")
    g.add_argument("--bits", nargs="+", metavar="SPEC",
                   help="fixed-point formats to compare, each N (state=weight=N, bias=N+4) or "
                        "KEY=VAL,... ([fixed] keys); the run's weights quantized nearest-even")
    g.add_argument("--rounding", help="update and state rounding for --bits: floor|nearest-even|stochastic")
    g.add_argument("--beta", type=float, help="float correction's beta (default the run's, positive)")
    g.add_argument("--nudged-steps", dest="nudged_steps", type=int,
                   help="float correction's weakly-clamped steps (default the run's)")
    g.add_argument("--method", choices=("implicit", "bptt"), default="implicit",
                   help="true gradient by implicit differentiation (default) or backpropagation through "
                        "600 relaxation steps")
    g.add_argument("--json", help="output file (default RUN_DIR/gradcheck.json)")
    g.set_defaults(func=cmd_gradcheck)


def cmd_gradcheck(args) -> int:
    from .config import ConfigError

    if args.examples < 1:
        raise ConfigError(f"examples: must be >= 1, got {args.examples}")
    if args.beta is not None and args.beta == 0:
        raise ConfigError("beta: must be nonzero (Delta W divides by beta)")
    res = gradcheck(args.run_dir, args.examples, args.bits, args.rounding, args.beta, args.nudged_steps, args.method)
    print(table(res), end="")
    out = Path(args.json) if args.json else Path(args.run_dir) / "gradcheck.json"
    from .files import atomic_write

    try:
        atomic_write(out, lambda f: f.write(json.dumps(res, indent=1).encode()))
    except OSError as e:
        raise ConfigError(f"json: cannot write {out} ({config_mod.os_reason(e, out)})") from None
    print(f"wrote {out}")
    return 0
