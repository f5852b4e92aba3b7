"""Tests for eqprop.model.topology (layered / layer-skipping topologies, Algorithm 1)."""

import math
import time

import numpy as np
import pytest

from eqprop.model.topology import (
    Topology,
    TopologyError,
    from_spec,
    layer_skipping,
    layered,
    n_from_p,
    p_from_n,
)

PAPER = (784, 500, 500, 500, 10)
PAPER_LAYERED = 784 * 500 + 500 * 500 * 2 + 500 * 10  # 897000
PAPER_INTRA = 3 * (500 * 499 // 2)  # 374250
PAPER_NO = PAPER_LAYERED + PAPER_INTRA  # 1271250


def allowed_pairs(sizes):
    n = sum(sizes)
    a, b = sizes[0], sizes[-1]
    return n * (n - 1) // 2 - a * (a - 1) // 2 - b * (b - 1) // 2


def assert_invariants(t: Topology):
    m = t.mask
    assert m.dtype == bool and m.shape == (t.n, t.n)
    assert np.array_equal(m, m.T)
    assert not np.diagonal(m).any()
    a, b = t.n_input, t.n_output
    assert not m[:a, :a].any(), "input-input connection"
    assert not m[t.n - b:, t.n - b:].any(), "output-output connection"
    c = t.counts()
    assert c["adjacent"] + c["intralayer"] + c["skip"] == c["total"]
    assert c["total"] == int(np.triu(m, 1).sum())
    assert sum(t.pair_counts().values()) == c["total"]


# ---------------------------------------------------------------- layered

def test_layered_small_hand_counts():
    t = layered([4, 3, 2])
    assert t.n == 9 and t.n_input == 4 and t.n_output == 2
    assert t.offsets == (0, 4, 7, 9)
    assert t.slices == [slice(0, 4), slice(4, 7), slice(7, 9)]
    assert t.layer_of.tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 2]
    assert t.counts() == {"adjacent": 12 + 6, "intralayer": 0, "skip": 0, "total": 18}
    assert t.pair_counts() == {(0, 1): 12, (1, 2): 6}
    assert t.n_connections_before_rewire() == 18
    assert t.p == 0.0 and t.kind == "layered" and t.n_rewire == 0
    assert t.pair_mask(0, 1).shape == (4, 3) and t.pair_mask(0, 1).all()
    assert t.pair_mask(2, 1).shape == (2, 3) and t.pair_mask(2, 1).all()
    assert not t.pair_mask(0, 2).any() and not t.pair_mask(1, 1).any()
    # hand-built mask
    hand = np.zeros((9, 9), dtype=bool)
    for i in range(4):
        for j in range(4, 7):
            hand[i, j] = hand[j, i] = True
    for i in range(4, 7):
        for j in range(7, 9):
            hand[i, j] = hand[j, i] = True
    assert np.array_equal(t.mask, hand)
    assert_invariants(t)


def test_edges_sorted_and_match_mask():
    t = layer_skipping([3, 4, 4, 2], n_rewire=7, seed=3)
    i, j = t.edges()
    assert i.dtype == np.int64 and j.dtype == np.int64
    assert np.all(i < j)
    pairs = list(zip(i.tolist(), j.tolist()))
    assert pairs == sorted(pairs) and len(set(pairs)) == len(pairs)
    rebuilt = np.zeros_like(t.mask)
    rebuilt[i, j] = True
    rebuilt[j, i] = True
    assert np.array_equal(rebuilt, t.mask)
    assert t.edges()[0][:4].tolist() == [0, 0, 0, 0]  # first rows belong to neuron 0


def test_layered_paper_count():
    t = layered(PAPER)
    assert t.counts() == {"adjacent": 897000, "intralayer": 0, "skip": 0, "total": 897000}
    assert PAPER_LAYERED == 897000
    assert t.n_connections_before_rewire() == 897000
    assert_invariants(t)


def test_paper_n0_with_intralayer():
    t = layer_skipping(PAPER, n_rewire=0)
    assert t.n_connections_before_rewire() == 1_271_250 == PAPER_NO
    assert t.counts() == {"adjacent": 897000, "intralayer": 374250, "skip": 0, "total": 1_271_250}
    assert t.p == 0.0
    # intralayer only in hidden layers
    assert not t.pair_mask(0, 0).any() and not t.pair_mask(4, 4).any()
    blk = t.pair_mask(2, 2)
    assert blk.sum() == 500 * 499 and not np.diagonal(blk).any()


# ---------------------------------------------------------------- p <-> n

def test_p_n_formula():
    assert p_from_n(0, 10) == 0.0
    assert p_from_n(1, 4) == pytest.approx(0.25)
    assert p_from_n(2, 4) == pytest.approx(1 - (3 / 4) ** 2)
    assert p_from_n(1000, 5000) == pytest.approx(1 - (4999 / 5000) ** 1000, rel=1e-12)
    assert n_from_p(0.0, 100) == 0
    assert n_from_p(1 - (3 / 4) ** 5, 4) == 5
    # rounds to nearest, not down / up
    assert n_from_p(1 - (3 / 4) ** 2.6, 4) == 3
    assert n_from_p(1 - (3 / 4) ** 2.4, 4) == 2
    for n in (1, 17, 12345, 100_000):
        assert n_from_p(p_from_n(n, PAPER_NO), PAPER_NO) == n


def test_paper_p_gives_about_100000():
    n = n_from_p(0.0756, PAPER_NO)
    expected = math.log(1 - 0.0756) / math.log((PAPER_NO - 1) / PAPER_NO)
    assert n == round(expected)
    assert 99_900 <= n <= 100_000
    assert p_from_n(100_000, PAPER_NO) == pytest.approx(0.0756, abs=5e-5)


# ---------------------------------------------------------------- Algorithm 1

@pytest.mark.parametrize("sizes", [(3, 4, 4, 2), (5, 3, 6, 3, 4), (2, 2)])
def test_replace_keeps_count(sizes):
    n0 = sum(a * b for a, b in zip(sizes[:-1], sizes[1:])) + sum(s * (s - 1) // 2 for s in sizes[1:-1])
    t = layer_skipping(sizes, n_rewire=25, seed=1) if allowed_pairs(sizes) > n0 else None
    if t is None:  # 2-2: everything allowed is already connected
        with pytest.raises(TopologyError, match="n_rewire"):
            layer_skipping(sizes, n_rewire=1)
        return
    assert t.kind == "skip" and t.n_rewire == 25
    assert t.n_connections_before_rewire() == n0
    assert t.counts()["total"] == n0
    # new connections are always layer-skipping; removed ones may be too
    assert 0 < t.counts()["skip"] <= 25
    assert t.p == pytest.approx(p_from_n(25, n0))
    assert_invariants(t)


def test_add_increases_by_exactly_n():
    sizes = (5, 3, 6, 3, 4)
    base = layer_skipping(sizes, n_rewire=0)
    n0 = base.counts()["total"]
    t = layer_skipping(sizes, n_rewire=20, mode="add", seed=2)
    assert t.kind == "skip-add"
    c = t.counts()
    assert c["total"] == n0 + 20
    # nothing removed: base connections all still there; every addition skips layers
    assert np.all(t.mask[base.mask])
    assert c["adjacent"] == base.counts()["adjacent"] and c["intralayer"] == base.counts()["intralayer"]
    assert c["skip"] == 20
    assert_invariants(t)


def test_add_can_fill_every_allowed_pair():
    sizes = (3, 2, 2, 3)
    n0 = 6 + 4 + 6 + 1 + 1
    free = allowed_pairs(sizes) - n0
    t = layer_skipping(sizes, n_rewire=free, mode="add", seed=0)
    assert t.counts()["total"] == allowed_pairs(sizes)
    assert_invariants(t)
    with pytest.raises(TopologyError, match=f"n_rewire: {free + 1} exceeds the {free} "):
        layer_skipping(sizes, n_rewire=free + 1, mode="add")


def test_p_argument_converts():
    sizes = (6, 5, 5, 3)
    t = layer_skipping(sizes, p=0.2, seed=0)
    n0 = t.n_connections_before_rewire()
    assert t.n_rewire == n_from_p(0.2, n0) > 0
    assert t.p == pytest.approx(0.2, abs=0.02)


def test_seed_reproducible():
    a = layer_skipping((6, 5, 5, 3), n_rewire=30, seed=11)
    b = layer_skipping((6, 5, 5, 3), n_rewire=30, seed=11)
    c = layer_skipping((6, 5, 5, 3), n_rewire=30, seed=12)
    assert np.array_equal(a.mask, b.mask) and a == b
    assert not np.array_equal(a.mask, c.mask)
    d = layer_skipping((6, 5, 5, 3), n_rewire=30, mode="add", seed=11)
    e = layer_skipping((6, 5, 5, 3), n_rewire=30, mode="add", seed=11)
    f = layer_skipping((6, 5, 5, 3), n_rewire=30, mode="add", seed=12)
    assert np.array_equal(d.mask, e.mask) and not np.array_equal(d.mask, f.mask)


def test_replace_statistics_small_network():
    sizes = (3, 4, 4, 2)
    base = layer_skipping(sizes, n_rewire=0)
    skip_total = 0
    io_seen = 0
    for seed in range(200):
        t = layer_skipping(sizes, n_rewire=10, seed=seed)
        assert_invariants(t)
        skip_total += t.counts()["skip"]
        io_seen += int(t.pair_mask(0, 3).sum())
        new = t.mask & ~base.mask
        assert np.ptp(t.layer_of[np.argwhere(new)], axis=1).min() >= 2  # added edges skip layers
    assert skip_total > 0
    assert io_seen > 0  # input-output connections can be produced


def _chi2(counts):
    counts = np.asarray(counts, dtype=float)
    e = counts.sum() / counts.size
    return float(((counts - e) ** 2 / e).sum())


def test_single_step_uniformity():
    """n = 1: the added pair is uniform over free pairs, the removed one over edges."""
    sizes = (3, 2, 2, 2)  # N_o = 6+4+4 + 1+1 = 16, free = 32 - 16 = 16
    base = layer_skipping(sizes, n_rewire=0)
    free_pairs = np.flatnonzero(np.triu(~base.mask, 1) & np.triu(_allowed_by_hand(sizes), 1))
    edge_pairs = np.flatnonzero(np.triu(base.mask, 1))
    assert free_pairs.size == 16 and edge_pairs.size == 16
    added = dict.fromkeys(free_pairs.tolist(), 0)
    removed = dict.fromkeys(edge_pairs.tolist(), 0)
    runs = 1600
    for seed in range(runs):
        t = layer_skipping(sizes, n_rewire=1, seed=seed)
        a = np.flatnonzero(np.triu(t.mask & ~base.mask, 1))
        r = np.flatnonzero(np.triu(base.mask & ~t.mask, 1))
        assert a.size == 1 and r.size == 1
        added[int(a[0])] += 1
        removed[int(r[0])] += 1
    assert min(added.values()) > 0 and min(removed.values()) > 0
    # df = 15: P(chi2 > 37.7) = 0.001
    assert _chi2(list(added.values())) < 37.7
    assert _chi2(list(removed.values())) < 37.7


def _allowed_by_hand(sizes):
    n = sum(sizes)
    m = ~np.eye(n, dtype=bool)
    m[: sizes[0], : sizes[0]] = False
    m[n - sizes[-1]:, n - sizes[-1]:] = False
    return m


def test_paper_size_rewiring(capsys):
    t0 = time.perf_counter()
    t = layer_skipping(PAPER, n_rewire=100_000, seed=0)
    dt = time.perf_counter() - t0
    c = t.counts()
    assert c["total"] == PAPER_NO
    assert 0 < c["skip"] <= 100_000
    assert c["adjacent"] < 897000 and c["intralayer"] < 374250
    assert t.p == pytest.approx(0.0756, abs=5e-4)
    assert_invariants(t)
    assert "skip 784-500-500-500-10: 1271250 connections" in t.summary()
    with capsys.disabled():
        print(f"\n[paper-size Algorithm 1, n=100000: {dt:.2f} s] {t.summary()}")


# ---------------------------------------------------------------- save / load

def test_save_load_roundtrip(tmp_path):
    for t in (layer_skipping((5, 4, 4, 3), n_rewire=9, seed=4),
              layer_skipping((5, 4, 4, 3), p=0.1, mode="add", seed=None),
              layered((4, 3, 2))):
        path = tmp_path / f"{t.kind}.topo"  # no .npz suffix: must still write exactly there
        t.save(path)
        assert path.exists()
        u = Topology.load(path)
        assert u == t and np.array_equal(u.mask, t.mask)
        assert u.sizes == t.sizes and u.kind == t.kind and u.n_rewire == t.n_rewire and u.seed == t.seed
    with np.load(path) as z:
        assert "mask" not in z.files and {"i", "j", "sizes", "kind", "n_rewire", "seed"} <= set(z.files)
        assert int(z["seed"]) == -1


def test_load_bad_files(tmp_path):
    bad = tmp_path / "garbage.npz"
    bad.write_bytes(b"this is not a zip file")
    with pytest.raises(TopologyError, match="garbage.npz"):
        Topology.load(bad)
    with pytest.raises(TopologyError, match="missing.npz"):
        Topology.load(tmp_path / "missing.npz")
    # well-formed file whose edges break the rules (input-input connection)
    t = layered((3, 2, 2))
    path = tmp_path / "ii.npz"
    t.save(path)
    with np.load(path) as z:
        d = {k: z[k] for k in z.files}
    d["i"] = np.concatenate([[0], d["i"]]).astype(d["i"].dtype)
    d["j"] = np.concatenate([[1], d["j"]]).astype(d["j"].dtype)
    np.savez_compressed(path, **d)
    with pytest.raises(TopologyError, match="ii.npz.*input neurons"):
        Topology.load(path)
    # truncated file
    t.save(path)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(TopologyError, match="ii.npz"):
        Topology.load(path)


# ---------------------------------------------------------------- validation

def test_validate_rejects_bad_masks():
    sizes = (2, 2, 2)
    good = layered(sizes).mask
    m = good.copy()
    m[0, 3] = False  # asymmetric
    with pytest.raises(TopologyError, match="mask: not symmetric"):
        Topology(sizes, m)
    m = good.copy()
    m[2, 2] = True
    with pytest.raises(TopologyError, match="mask: neuron 2 .*itself"):
        Topology(sizes, m)
    m = good.copy()
    m[0, 1] = m[1, 0] = True
    with pytest.raises(TopologyError, match="mask: input neurons"):
        Topology(sizes, m)
    m = good.copy()
    m[4, 5] = m[5, 4] = True
    with pytest.raises(TopologyError, match="mask: output neurons"):
        Topology(sizes, m)
    with pytest.raises(TopologyError, match="mask: shape"):
        Topology(sizes, good[:5, :5])
    with pytest.raises(TopologyError, match="mask: dtype"):
        Topology(sizes, good.astype(np.float32))
    t = layered(sizes)
    t.mask[0, 1] = t.mask[1, 0] = True  # mutated after construction
    with pytest.raises(TopologyError, match="input neurons"):
        t.validate()


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: layered([4, -3, 2]), r"sizes: layer 1 has size -3"),
        (lambda: layered([4, 0, 2]), r"sizes: layer 1 has size 0"),
        (lambda: layered([784]), r"sizes: .*2 layers"),
        (lambda: layered([4, 2.5, 2]), r"sizes: layer 1"),
        (lambda: layer_skipping([4, 3, 2], p=1.0), r"p: 1\.0 is outside \[0, 1\)"),
        (lambda: layer_skipping([4, 3, 2], p=-0.1), r"p: -0\.1 is outside \[0, 1\)"),
        (lambda: layer_skipping([4, 3, 2], p=float("nan")), r"p: nan"),
        (lambda: layer_skipping([4, 3, 2], n_rewire=-1), r"n_rewire: -1"),
        (lambda: layer_skipping([2, 2, 2], n_rewire=10**6, mode="add"),
         r"n_rewire: 1000000 exceeds the 4 unconnected allowed pairs"),
        (lambda: layer_skipping([1, 1], n_rewire=1), r"n_rewire: 1 "),
        (lambda: layer_skipping([4, 3, 2], n_rewire=3, p=0.1), r"n_rewire/p"),
        (lambda: layer_skipping([4, 3, 2], mode="swap"), r"mode: 'swap'"),
        (lambda: from_spec("bogus", [4, 3, 2]), r"kind: 'bogus'"),
        (lambda: from_spec("layered", [4, 3, 2], p=0.1), r"p: 0\.1 given for kind 'layered'"),
        (lambda: from_spec("layered", [4, 3, 2], n_rewire=3), r"n_rewire: 3 given for kind 'layered'"),
    ],
)
def test_bad_inputs(call, match):
    with pytest.raises(TopologyError, match=match) as ei:
        call()
    assert "\n" not in str(ei.value)
    assert isinstance(ei.value, ValueError)


def test_replace_on_tiny_network_many_steps():
    # 2-2-2 has 4 free pairs; replace mode can rewire indefinitely
    t = layer_skipping([2, 2, 2], n_rewire=5000, seed=0)
    assert t.counts()["total"] == 9
    assert_invariants(t)


def test_from_spec_dispatch():
    assert from_spec("layered", (4, 3, 2)) == layered((4, 3, 2))
    assert from_spec("skip", (4, 3, 3, 2), n_rewire=5, seed=1) == layer_skipping((4, 3, 3, 2), n_rewire=5, seed=1)
    a = from_spec("skip-add", (4, 3, 3, 2), p=0.2, seed=1)
    assert a == layer_skipping((4, 3, 3, 2), p=0.2, mode="add", seed=1) and a.kind == "skip-add"
    assert from_spec("skip", "4-3-3-2", n_rewire=2).sizes == (4, 3, 3, 2)


def test_summary():
    s = layered((4, 3, 2)).summary()
    assert s.startswith("layered 4-3-2: 18 connections (adjacent 18, intralayer 0, layer-skipping 0)")
    t = layer_skipping((4, 3, 3, 2), n_rewire=3, seed=0)
    s = t.summary()
    c = t.counts()
    assert s.startswith(f"skip 4-3-3-2: {c['total']} connections (adjacent {c['adjacent']}, "
                        f"intralayer {c['intralayer']}, layer-skipping {c['skip']}); n=3, p=")
    assert s.count("\n") <= 1
