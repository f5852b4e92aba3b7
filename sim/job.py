"""A co-simulation job: the examples to run and what the fixed-point model expects.

The host side (``runner.py``) computes the expected states, predictions and
parameters with ``FixedNetwork`` (batch 1, docs/numerics.md) and writes them
with the examples into a JSON job; the cocotb testbench (``tb_core.py``)
drives the RTL with them and scores every value. Persistent particles are the
host's: a training example starts from the free equilibrium the model reached
the last time it saw that image (zero the first time). Under the settle rule
(docs/numerics.md §4a; the design's, or the one the job asks the bench to
write into the core's registers) each example also carries the number of
steps its free phase takes, which the scoreboard compares with the core's
``free_steps`` register.
"""

from __future__ import annotations

from pathlib import Path

import torch

from eqprop.hdl.params import CoreParams, load_manifest, settle_to_dict


def _lists(t: torch.Tensor) -> list:
    return [int(v) for v in t.reshape(-1).tolist()]


def make_job(design_dir: str | Path, x_pixels: torch.Tensor, labels: torch.Tensor, train: bool,
             params: CoreParams | None = None, seed: int = 0, start_update: int = 0) -> dict:
    """Expected results of the model on these examples (pixels in [0, 1]), under the
    settle rule of ``params`` (default: the design's; ``job["settle"]``, which the bench
    writes into the core's registers before the first example)."""
    p = design_network(design_dir, params)
    net = p.net
    man = load_manifest(design_dir)
    S = net.n_s
    n_out = p.topology.sizes[-1]
    xq = net.prepare_inputs(x_pixels)
    gen = torch.Generator().manual_seed(seed)
    steps = p.n_free + p.n_nudged if train else p.n_free
    stride = steps * S
    examples = []
    for e in range(xq.shape[0]):
        x = xq[e : e + 1]
        label = int(labels[e])
        s_init = net.zero_state(1)
        d = net.input_drive(x)
        s0 = net.relax(s_init, d, p.n_free, event_base=torch.tensor([e * stride]), settle=p.settle)
        ex = {"x": _lists(x), "s_init": _lists(s_init), "target": label if train else None,
              "example": e, "label": label}
        exp = {"s0": _lists(s0), "pred": int(net.outputs(s0).argmax(1)), "free_steps": int(net.last_steps[0])}
        if train:
            sign = 1 if int(torch.randint(0, 2, (1,), generator=gen)) else -1
            beta = p.beta * sign
            t = net.prepare_targets(torch.nn.functional.one_hot(torch.tensor([label]), n_out).float())
            # the weakly-clamped phase's events start at base + n_free * S, whatever step the
            # free phase ended after (§4a, §5)
            sb = net.relax(s0, d, p.n_nudged, p.eps, beta, t, event_base=torch.tensor([e * stride + p.n_free * S]))
            net.learn(x, s0, sb, beta, start_update + e)
            ex.update(beta_neg=sign < 0, update=start_update + e)
            exp.update(final=_lists(sb), weights=p.lane_weights(net.W_in, net.W_ss), biases=_lists(net.b))
        else:
            exp["final"] = exp["s0"]
        ex["expect"] = exp
        examples.append(ex)
    return {"design": str(Path(design_dir).resolve()), "name": man["name"], "train": train,
            "settle": settle_to_dict(p.settle), "examples": examples}


def read_hex(path: Path, words: int, bits: int) -> list[int]:
    """A memory file of ``eqprop hdl generate``: ``words`` hex words of ``bits`` bits, one a line;
    DesignError naming the file (and line) otherwise."""
    from eqprop.hdl.params import REGENERATE, DesignError

    try:
        lines = path.read_text().split("\n")
    except FileNotFoundError:
        raise DesignError(f"{path}: no such file (a memory file of the design); {REGENERATE}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DesignError(f"{path}: cannot read it ({getattr(e, 'strerror', None) or e.__class__.__name__}); "
                          f"{REGENERATE}") from None
    out = []
    for no, line in enumerate(lines, 1):
        t = line.strip()
        if not t:
            continue
        try:
            v = int(t, 16)
        except ValueError:
            raise DesignError(f"{path}: line {no}: {t[:20]!r} is not a hex word; {REGENERATE}") from None
        if v >> bits:
            raise DesignError(f"{path}: line {no}: {t!r} does not fit {bits} bits; {REGENERATE}")
        out.append(v)
    if len(out) != words:
        raise DesignError(f"{path}: {len(out)} words, the design's lane needs {words}; {REGENERATE}")
    return out


def design_network(design_dir, params: CoreParams | None = None) -> CoreParams:
    """The design's parameters, with ``.net`` holding the weights and biases its
    memories start with (read back from its hex files)."""
    from eqprop.hdl.driver import to_signed

    d = Path(design_dir)
    p = params or CoreParams.from_design(d)
    num = p.num
    b = torch.zeros(p.layout.S, dtype=torch.int64)
    words = []
    for ell, lane in enumerate(p.layout.lanes):
        words.append([to_signed(w, num.weight_store.n_word)
                      for w in read_hex(d / f"lane{ell}_weights.hex", lane.n_words, num.weight_store.n_word)])
        bs = [to_signed(v, num.bias.n_word) for v in read_hex(d / f"lane{ell}_biases.hex", len(lane.neurons),
                                                               num.bias.n_word)]
        for i, v in zip(lane.neurons, bs):
            b[i] = v
    W_in, W_ss = (torch.from_numpy(a) for a in p.weights_from_lanes(words))  # by weight address
    p.net.W_in, p.net.W_ss, p.net.b = W_in, W_ss, b
    p.net._refresh()
    return p
