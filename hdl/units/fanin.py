"""A lane's fan-in lists and stored weights (the weight source): the counter walk
(``FaninStore``, issue 10) and the connection-ROM walk it replaces (``RomFaninStore``, the
reference of the tests)."""

from __future__ import annotations

import numpy as np
from amaranth.hdl import Array, Module, Mux, Signal, signed
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from ..enums import Walk
from ..params import CoreParams, bits_for
from .signatures import check_lane, check_words, entry_bits, entry_layout, loc_bits, waddr_bits, write_signature


def _mux(sel, a: int, b: int):
    """Mux(sel, a, b) of two integers, or the integer itself where they are equal (no mux, and
    no compare left behind for nothing to read)."""
    return a if a == b else Mux(sel, a, b)


def _fit(v, port):
    """``v`` as wide as ``port`` (the bits an assignment to it keeps), before a mux."""
    return v[:len(port)] if len(v) > len(port) else v


def entry_rows(params: CoreParams, index: int) -> list[dict]:
    """The fields (``signatures.entry_layout``) of lane ``index``'s entries in memory order
    (``layout.py``: the drive entries, then the step entries): what ``RomFaninStore`` holds
    and what ``FaninStore``'s walk produces."""
    lay = params.layout
    c = lay.lanes[index].columns
    src, inp, neuron = c["src"], c["src_input"], c["neuron"]
    saddr = np.where(inp, src, lay.local[np.where(inp, 0, src)])
    sbank = np.where(inp, 0, lay.owner[np.where(inp, 0, src)])
    cols = {"sel_in": inp.astype(np.int64), "saddr": saddr, "sbank": sbank, "nloc": lay.local[neuron],
            "nidx": neuron, "edge": np.maximum(c["edge"], 0), "pair": c["pair"], "first": c["first"],
            "last": c["last"], "dummy": c["dummy"], "out": neuron >= lay.out_first, "waddr": c["waddr"],
            "mirror": c["mirror"]}
    names = list(cols)
    return [dict(zip(names, row)) for row in zip(*(np.asarray(cols[k]).astype(np.int64).tolist() for k in names))]


def table_layouts(params: CoreParams, n_entries: int) -> dict:
    """The word of each table of a FaninStore (``data.StructLayout``), by memory name."""
    lay = params.layout
    el = entry_layout(params)
    sizes = lay.topology.sizes
    out = {
        # the lane's neurons: index, layer, position in the layer, sparse sources in the drive / step part
        "neurons": data.StructLayout({"nidx": bits_for(lay.S), "layer": bits_for(len(sizes)),
                                      "xl": bits_for(max(sizes[1:])), "sp_drive": 1, "sp_step": 1}),
        # each dense segment's first slot (and, P = 1, its first weight address)
        "segments": data.StructLayout({"slot": el.members["edge"]} | (
            {"waddr": el.members["waddr"]} if lay.once else {})),
        "sparse": data.StructLayout({"src": bits_for(max(lay.n_in, lay.S)), "slot": el.members["edge"],
                                     "pair": el.members["pair"], "last": 1}),
        "holes": data.StructLayout({"pos": entry_bits(n_entries)}),  # sorted entry indices of the holes
    }
    if lay.P > 1:  # a non-input source's lane and local index (one lane: the index itself)
        out["sources"] = data.StructLayout({"sbank": el.members["sbank"], "saddr": loc_bits(params)})
    return out


def walk_tables(params: CoreParams, index: int) -> dict:
    """The tables of lane ``index``'s counter walk: name -> (word layout, rows), the rows as
    dicts. ``segments``, ``sparse`` and ``holes`` end with one pad word (``holes``': an index
    the walk never reaches inside a range), where the walk's pointers stop. A table of only
    its pad word (a layered network's ``sparse`` and ``holes``) is a constant, not a memory
    (``table_memories``)."""
    lay = params.layout
    lane = lay.lanes[index]
    pr = lane.program
    lays = table_layouts(params, lane.n_entries)
    sentinel = (1 << lays["holes"].members["pos"]) - 1
    tables = {
        "neurons": [{"nidx": int(i), "layer": int(l), "xl": int(x), "sp_drive": int(a), "sp_step": int(b)}
                    for i, l, x, (a, b) in zip(pr.nidx, pr.layer, pr.xl, pr.has_sparse)],
        "segments": [{"slot": int(v)} | ({"waddr": int(a)} if lay.once else {})
                     for v, a in zip(pr.seg_first, pr.seg_waddr if lay.once else pr.seg_first)]
        + [{"slot": 0} | ({"waddr": 0} if lay.once else {})],
        "sparse": [{"src": int(j), "slot": int(sl), "pair": int(q), "last": int(z)}
                   for j, sl, q, z in zip(pr.sp_src, pr.sp_slot, pr.sp_pair, pr.sp_last)]
        + [{"src": 0, "slot": 0, "pair": 0, "last": 1}],
        "holes": [{"pos": int(v)} for v in pr.holes] + [{"pos": sentinel}],
    }
    if "sources" in lays:
        tables["sources"] = [{"sbank": int(lay.owner[j]), "saddr": int(lay.local[j])} for j in range(lay.S)]
    return {k: (lays[k], rows) for k, rows in tables.items()}


def table_memories(tables: dict) -> dict:
    """The tables of ``walk_tables`` that are memories: all but a table of only its pad word,
    which the walk holds as a constant."""
    return {k: v for k, v in tables.items() if not (k in ("sparse", "holes") and len(v[1]) == 1)}


def _ports(params: CoreParams, n_entries: int) -> dict:
    bits, wbits = entry_bits(n_entries), waddr_bits(params)
    ws = signed(params.num.weight_store.n_word)
    return {
        "start": In(1), "walk": In(Walk), "advance": In(1), "pos": Out(bits), "last": Out(1),
        "host_rd": In(1), "host_addr": In(wbits),
        "entry": Out(entry_layout(params)),
        "weight": Out(ws),
        "wr": In(write_signature(wbits, ws)),
    }


class _WeightSource(wiring.Component):
    """What both walks share: lane ``index``'s ports (``_ports``), its initial stored weights
    (checked: one raw word of the weight_store format per word of the lane's weight memory,
    ``Lane.n_words``) and the latency."""

    LATENCY = 1  # pos (or host_addr) -> entry, weight

    def __init__(self, params: CoreParams, index: int, weights=None):
        check_lane(params, index)
        self.p = params
        self.index = index
        lane = params.layout.lanes[index]
        self.n_entries = lane.n_entries
        self.n_drive = lane.n_drive
        self.n_words = lane.n_words
        self.weights = check_words(f"lane {index} weights", weights, self.n_words, params.num.weight_store)
        super().__init__(_ports(params, self.n_entries))


class FaninStore(_WeightSource):
    """Lane ``index``'s fan-in lists and their walk by address counters (issue 10): the stored
    weights ``W`` (weight_store format, §1; ``Lane.n_words`` words: at P = 1 each weight once,
    else one word per entry, ``layout.py``) and the counters that walk a range of
    ``layout.py``'s entries (the drive entries ``[0, n_drive)``, whose source is an input,
    then the step entries ``[n_drive, n_total)``), one entry per ``advance``, reading each
    entry's weight at its weight address (``waddr``) and
    producing each entry's fields (``signatures.entry_layout``) as a connection ROM would
    (``RomFaninStore``, ``entry_rows``), from small tables (``walk_tables``) instead of a word
    per entry:

    - ``neurons`` (one word per neuron of the lane): its index, layer, position x in the layer
      and whether it has sparse sources in each part;
    - ``segments`` (one word per dense segment walked, in walk order): the segment's first
      slot. Position y of the segment has slot first + the strides so far: n_L per position
      (source layer below, or the intralayer segment while y < x), else 1 (docs/numerics.md §5);
      at P = 1 also its first weight address, which grows by n_L (source layer below), n_L -
      y - 2 (the intralayer triangle while y < x) or 1 (``layout.py``);
      the segments of each layer, their source layers, lengths and pairs are constants;
    - ``sparse`` (one word per sparse connection, in walk order): its source (input or
      non-input index), slot, pair and whether it is the neuron's last; the only
      per-connection indices;
    - ``holes`` (one word per hole): the sorted entry indices of the positions of dense
      segments without a connection; the entry at the walk's position is a hole (``dummy``)
      when it equals the next one;
    - ``sources`` (one word per non-input neuron, P > 1 only): its lane and local index
      (``sbank``, ``saddr``).

    The counters: ``pos`` (the entry), the neuron ``k`` of the lane, the run ``s`` of the
    neuron in the part (its dense segments, then its sparse run; or its one dummy), the
    position ``y`` in the run, the slot, and the pointers into ``segments``, ``sparse`` and
    ``holes``; the current word of each of those four tables, in registers; and what the
    position is (dense, sparse, a neuron's dummy; the last of its run, of the neuron's part;
    a hole), registers computed with the move to it. Each table is read one word ahead (its
    pointer's next value + 1; the neurons wrap to the first, the others stop at their pad
    word), its output only loads the current word when the pointer moves, and a ``start``
    loads the range's first words (constants): the next-state logic reads registers only,
    no path goes from a table's output back to its address. The fields are registered, and
    ``sources`` is read with the current position's source, so the fields come one cycle
    after ``pos`` like a ROM's.

    Ports (``LATENCY`` = 1: fields and weight one cycle after the address):

    - ``start`` (in): the walk restarts at the first entry of the range ``walk`` (``Walk``,
      read with ``start``): ``DRIVE`` [0, n_drive) (the drive pass), ``STEP`` [n_drive,
      n_total) (a relaxation step), ``ALL`` [0, n_total) (the update).
    - ``advance`` (in): the walk moves to the next entry (MacPipeline: every cycle of its
      walk; UpdateUnit: once per entry).
    - ``pos`` (out): the entry the walk is at, whose weight read is issued in this cycle;
      ``last`` (out): it is the range's last entry.
    - ``host_rd``, ``host_addr`` (in): read the weight of entry ``host_addr`` instead (the
      host, while the lane is idle; ``entry`` then still follows the walk).
    - ``entry`` (out): the fields of the entry the walk was at in the previous cycle;
      ``weight`` (out): the stored weight read in the previous cycle (signed raw).
    - ``wr`` (in): en, addr, data: a stored weight written back (UpdateUnit, host).

    ``weights``: the initial stored weights by weight address (``CoreParams.lane_weights``),
    raw integers of the weight_store format, ``Lane.n_words`` of them (None: zeros).
    """


    def elaborate(self, platform):
        m = Module()
        p, lay = self.p, self.p.layout
        lane = lay.lanes[self.index]
        pr = lane.program
        sizes, n_in, nL = lay.topology.sizes, lay.n_in, len(lay.topology.sizes)
        el = entry_layout(p)
        # the stored weights, read at the walk's entry's weight address (or the host's): k per
        # word (CoreParams.weights_per_word), one port (a write, else a read: the UP5K's SPRAM)
        # (a weight in the low bits of its slot of ``weight_slot_bits``)
        kw, ws, sb = p.weights_per_word, self.weight.shape().width, p.weight_slot_bits
        sh = kw.bit_length() - 1
        packed = [sum((self.weights[a + t] & ((1 << ws) - 1)) << (t * sb) for t in range(kw) if a + t < self.n_words)
                  for a in range(0, self.n_words, kw)] if kw > 1 else self.weights
        wmem = m.submodules.weights = memory.Memory(shape=self.weight.shape() if kw == 1 else sb * kw,
                                                    depth=max(-(-self.n_words // kw), 1), init=packed)
        w_rd, w_wr = wmem.read_port(), wmem.write_port(granularity=sb if kw > 1 else None)
        tables = walk_tables(p, self.index)
        rd = {}
        for name, (shape, rows) in table_memories(tables).items():
            mem = m.submodules[name] = memory.Memory(shape=shape, depth=len(rows), init=rows)
            rd[name] = mem.read_port()
        n_own, n_seg, n_sp, n_holes = len(lane.neurons), pr.n_seg, pr.n_sparse, pr.n_holes
        # The current word of each table is held in registers (part of the walk's state); the
        # table is read one word ahead, so its output only loads these registers and no path
        # goes from a table's output back to its address.
        # (a table of only its pad word is that word, a constant)
        cur = {name: Signal(tables[name][0], name=f"{name}_cur") if name in rd
               else tables[name][0].const(tables[name][1][0]) for name in ("neurons", "segments", "sparse", "holes")}
        nt, ft, sp, ht = (cur[name] for name in ("neurons", "segments", "sparse", "holes"))

        # ---- the counters (the state of the entry at ``pos``)
        run_max = max(max(sizes), n_sp)  # a dense segment's length, or a sparse run's (at most n_sp)
        part = Signal()  # 0: the drive part, 1: the step part
        k = Signal(range(max(n_own, 2)))  # the neuron (local index)
        s = Signal(range(4))  # its run in the part: dense segments 0 .. nds - 1, then the sparse run
        y = Signal(range(run_max + 1))  # the position in the run
        slot_r = Signal(el.members["edge"])  # the slot of a dense position after the segment's first
        wa_r = Signal(el.members["waddr"])  # P = 1: its weight address
        q = Signal(range(n_seg + 1))  # pointers: segments, sparse, holes (at most their pad word)
        spi = Signal(range(n_sp + 1))
        hp = Signal(range(n_holes + 1))
        to_drive_end = Signal()  # the walk ends at the drive part's end (else at the list's)

        # ---- layer constants: the dense segments of a layer-``layer`` neuron in part ``pt``
        # (only the fields a user names: the current position's and the next one's differ)
        def segment_constants(tag, pt, layer, run, fields):
            shapes = {"nds": range(4),  # dense segments
                      "len1": y.shape(),  # the segment's length - 1
                      "sbase": range(max(lay.S, n_in) + 1),  # its first source (input or non-input index)
                      "lower": 1,  # the stride: n_L on every position (source layer below)
                      "intra": 1,  # n_L while y < x (the intralayer segment), else 1
                      "pair_d": el.members["pair"], "pair_self": el.members["pair"],  # a dummy's: (L, L)
                      "n_l": range(max(sizes) + 1), "out_l": 1}
            c = {k: Signal(shapes[k], name=f"{tag}_{k}") for k in fields}

            def put(**values):
                return [c[k].eq(v) for k, v in values.items() if k in c]

            per_run = {"len1", "lower", "intra", "pair_d", "sbase"} & set(fields)
            with m.Switch(layer):
                for l in range(1, nL):
                    with m.Case(l):
                        m.d.comb += put(pair_self=lay.pair_index(l, l), n_l=sizes[l], out_l=l == nL - 1)
                        if not per_run and "nds" not in c:
                            continue
                        for ptv, drive in enumerate((True, False)):
                            segs = lay.segments[(drive, l)]
                            with m.If(pt == ptv):
                                m.d.comb += put(nds=len(segs))
                                if not per_run:
                                    continue
                                with m.Switch(run):
                                    for idx, src_l in enumerate(segs):
                                        with m.Case(idx):
                                            m.d.comb += put(len1=sizes[src_l] - 1, lower=src_l < l,
                                                            intra=src_l == l, pair_d=lay.pair_index(l, src_l),
                                                            sbase=sum(sizes[:src_l]) - (0 if drive else n_in))
            return c

        # What the entry at ``pos`` is, in registers computed with the move to it (the next-state
        # logic reads only registers): a dense position, a sparse one, a neuron's dummy; the last
        # of its run, of the neuron's part; a hole.
        dense, sparse, dummy_run, run_last, n_last, hole = (Signal(name=n) for n in (
            "dense", "sparse", "dummy_run", "run_last", "n_last", "hole"))
        cc = segment_constants("seg", part, nt.layer, s,
                               ("lower", "intra", "n_l", "sbase", "pair_d", "pair_self", "out_l"))
        slot = Mux(y == 0, ft.slot, slot_r)
        below = y < nt.xl  # in an intralayer segment: the source comes before the neuron
        stride = Mux(cc["lower"] | (cc["intra"] & below), cc["n_l"], 1)
        # The weight address (layout.py): P = 1 a dense position's counter (the block's rectangle,
        # stride n_L or 1; the intralayer triangle, n_L - y - 2 below the diagonal, else 1), a
        # sparse entry's slot - sparse_delta, a neuron's dummy 0; P > 1 the entry itself
        wcur = Signal(el.members["waddr"])
        if lay.once:
            # (``wcur`` is a register, computed with the move to the position from the next
            # values of the registers it is a function of, below: the walk's counters through
            # the address multiplexers into the UP5K's SPRAM address were the 784-100x5
            # network's critical path)
            def dense_waddr(y_v, seg_word, wa_v):  # the segment's first address at y = 0, else the counter
                return Mux(y_v == 0, seg_word.waddr, wa_v)

            def waddr_of(dense_v, sparse_v, y_v, seg_word, wa_v, sp_word):  # the position's weight address
                sp_wa = _fit(sp_word.slot - pr.sparse_delta, wcur) if n_sp else 0
                return Mux(dense_v, dense_waddr(y_v, seg_word, wa_v), Mux(sparse_v, sp_wa, 0))

            wa = dense_waddr(y, ft, wa_r)  # the current dense position's, which the counter steps on from
            wstride = Mux(cc["lower"], cc["n_l"], Mux(cc["intra"] & below, cc["n_l"] - y - 2, 1))
        else:
            m.d.comb += wcur.eq(self.pos)
        src = Signal(range(max(lay.S, n_in)))  # (sbase + y of a dense position is a source index)
        m.d.comb += src.eq(Mux(dense, _fit(cc["sbase"] + y, src), Mux(sparse, sp.src, Mux(part, nt.nidx, 0))))

        # ---- the fields, registered: the entry one cycle after ``pos``
        f = Signal(el)
        f_src, f_part = Signal(el.members["saddr"]), Signal()  # an input index where it is used
        m.d.sync += [
            f.sel_in.eq(~part), f.nloc.eq(k), f.nidx.eq(nt.nidx),
            f.edge.eq(Mux(dense, slot, Mux(sparse, sp.slot, 0))),
            f.pair.eq(Mux(dense, cc["pair_d"], Mux(sparse, sp.pair, cc["pair_self"]))),
            f.first.eq((s == 0) & (y == 0)), f.last.eq(n_last), f.dummy.eq(dummy_run | hole),
            f.out.eq(cc["out_l"]), f_src.eq(src), f.waddr.eq(wcur),
            f.mirror.eq(part & (src > nt.nidx) if lay.once else 0),
        ]
        m.d.comb += self.entry.eq(f)
        if "sources" in rd:  # a non-input source's lane and local index, read with the position's source
            st = rd["sources"]
            m.d.sync += f_part.eq(part)
            m.d.comb += [st.addr.eq(Mux(part, _fit(src, st.addr), 0)),
                         self.entry.saddr.eq(Mux(f_part, st.data.saddr, f_src)),
                         self.entry.sbank.eq(Mux(f_part, st.data.sbank, 0))]
        else:
            m.d.comb += [self.entry.saddr.eq(f_src), self.entry.sbank.eq(0)]

        # ---- the next state
        regs = {"pos": self.pos, "part": part, "k": k, "s": s, "y": y, "slot": slot_r, "q": q}
        # (a table of only its pad word needs no pointer)
        regs |= ({"sp": spi} if "sparse" in rd else {}) | ({"hp": hp} if "holes" in rd else {})
        if lay.once:
            regs["wa"] = wa_r
        inc = {"neurons": n_last, "segments": dense & run_last & (q != n_seg),
               "sparse": sparse & (spi != n_sp) if "sp" in regs else 0,
               "holes": hole & (hp != n_holes) if "hp" in regs else 0}  # the pointer moves on (at an advance)
        nx = {name: Signal.like(sig, name=f"{name}_next") for name, sig in regs.items()}
        m.d.comb += [nx[name].eq(sig) for name, sig in regs.items()]
        step = self.walk == Walk.STEP
        with m.If(self.start):
            m.d.comb += [nx["pos"].eq(_mux(step, self.n_drive, 0)), nx["part"].eq(step), nx["k"].eq(0),
                         nx["s"].eq(0), nx["y"].eq(0), nx["q"].eq(_mux(step, pr.n_seg_drive, 0))]
            m.d.comb += [nx[r].eq(_mux(step, v, 0)) for r, v in (("sp", pr.n_sparse_drive), ("hp", pr.n_holes_drive))
                         if r in nx]
            m.d.sync += to_drive_end.eq(self.walk == Walk.DRIVE)
        with m.Elif(self.advance):
            if lay.once:
                m.d.comb += nx["wa"].eq(wa + wstride)
            m.d.comb += [nx["pos"].eq(self.pos + 1), nx["slot"].eq(slot + stride), nx["q"].eq(q + inc["segments"])]
            m.d.comb += [nx[r].eq(ptr_sig + inc[t]) for r, ptr_sig, t in (("sp", spi, "sparse"), ("hp", hp, "holes"))
                         if r in nx]
            with m.If(n_last):  # the next neuron (after the part's last, the step part's first)
                m.d.comb += [nx["s"].eq(0), nx["y"].eq(0)]
                with m.If(k == n_own - 1):
                    m.d.comb += [nx["k"].eq(0), nx["part"].eq(1)]
                with m.Else():
                    m.d.comb += nx["k"].eq(k + 1)
            with m.Elif(run_last):  # the next run of the neuron
                m.d.comb += [nx["s"].eq(s + 1), nx["y"].eq(0)]
            with m.Else():
                m.d.comb += nx["y"].eq(y + 1)
        m.d.sync += [sig.eq(nx[name]) for name, sig in regs.items()]
        # Each table is read one word ahead (the neurons wrap: the drive part's last neuron is
        # followed by the step part's first; the others stop at their pad word): the next word
        # is a start's first word of the range (a constant), the word read ahead when the
        # pointer moves, or the current one.
        ptr = {"neurons": k, "segments": q, "sparse": spi, "holes": hp}
        first = {"neurons": (0, 0), "segments": (0, pr.n_seg_drive), "sparse": (0, pr.n_sparse_drive),
                 "holes": (0, pr.n_holes_drive)}
        word_n = {}
        for name, pv in ptr.items():
            shape, rows = tables[name]
            top = len(rows) - 1
            if name not in rd:  # only its pad word: a constant (the pointer never moves)
                word_n[name] = cur[name]
                continue

            addr = rd[name].addr

            def ahead(v, by):  # the address ``by`` words after pointer value ``v`` (an int: a constant)
                if name == "neurons":  # (v + by) mod n_own
                    if isinstance(v, int):
                        return (v + by) % (top + 1)
                    if top == 0:
                        return 0
                    if top + 1 - by <= 0:  # (no compare that is always true)
                        return _fit(v + by - (top + 1), addr)
                    return Mux(v >= top + 1 - by, _fit(v + by - (top + 1), addr), _fit(v + by, addr))
                if isinstance(v, int):
                    return min(v + by, top)
                if top - by <= 0:  # a table of its pad words only (no compare that is always true)
                    return top
                return Mux(v >= top - by, top, _fit(v + by, addr))

            move = self.advance & inc[name]
            m.d.comb += addr.eq(Mux(self.start, _mux(step, ahead(first[name][1], 1), ahead(first[name][0], 1)),
                                    Mux(move, ahead(pv, 2), ahead(pv, 1))))
            word_n[name] = Signal(shape, name=f"{name}_word_next")
            c_all, c_step = (shape.const(rows[i]).as_value() for i in first[name])
            first_word = c_all if rows[first[name][0]] == rows[first[name][1]] else Mux(step, c_step, c_all)
            m.d.comb += word_n[name].eq(Mux(self.start, first_word,
                                            Mux(move, rd[name].data.as_value(), cur[name].as_value())))
            m.d.sync += cur[name].eq(word_n[name])
        # the next position's registers
        ntn, spn = word_n["neurons"], word_n["sparse"]
        cn = segment_constants("seg_next", nx["part"], ntn.layer, nx["s"], ("nds", "len1"))
        hs_n = Mux(nx["part"], ntn.sp_step, ntn.sp_drive)
        dense_n = nx["s"] < cn["nds"]
        sparse_n = ~dense_n & hs_n
        run_last_n = Mux(dense_n, nx["y"] == cn["len1"], Mux(sparse_n, spn.last, 1))
        m.d.sync += [dense.eq(dense_n), sparse.eq(sparse_n), dummy_run.eq((cn["nds"] == 0) & ~hs_n),
                     run_last.eq(run_last_n),
                     n_last.eq(run_last_n & Mux(dense_n, (nx["s"] + 1 == cn["nds"]) & ~hs_n, 1)),
                     hole.eq(nx["pos"] == word_n["holes"].pos)]
        if lay.once:
            m.d.sync += wcur.eq(waddr_of(dense_n, sparse_n, nx["y"], word_n["segments"], nx["wa"], spn))

        # ---- the weights
        end = Mux(to_drive_end, self.n_drive - 1, self.n_entries - 1)
        addr = Signal.like(wcur)
        m.d.comb += [self.last.eq(self.pos == end),
                     addr.eq(Mux(self.wr.en, self.wr.addr, Mux(self.host_rd, self.host_addr, wcur))),
                     w_rd.addr.eq(addr[sh:]), w_rd.en.eq(~self.wr.en), w_wr.addr.eq(addr[sh:])]
        if kw == 1:
            m.d.comb += [self.weight.eq(w_rd.data), w_wr.en.eq(self.wr.en), w_wr.data.eq(self.wr.data)]
        else:  # the word's weight: the address's low bits, kept with the read
            sel = Signal(sh)
            with m.If(~self.wr.en):
                m.d.sync += sel.eq(addr[:sh])
            slot = Signal(sb)
            m.d.comb += [self.weight.eq(Array(w_rd.data[t * sb:t * sb + ws] for t in range(kw))[sel]),
                         slot.eq(self.wr.data.as_unsigned()),
                         w_wr.en.eq(Mux(self.wr.en, 1 << addr[:sh], 0)), w_wr.data.eq(slot.replicate(kw))]
        return m


class RomFaninStore(_WeightSource):
    """The reference walk: lane ``index``'s entries' fields in a connection ROM (one
    ``entry_layout`` word per entry, ``entry_rows``) next to the stored weights, and a counter
    over a range of them. Same ports, latency and behaviour as ``FaninStore`` (which the
    design uses) but for the weights: it keeps a word per entry (each entry's initial word is
    the one at its weight address), read and written at the entry index; kept for the tests,
    which compare the two walks' fields word for word."""


    def elaborate(self, platform):
        m = Module()
        depth = max(self.n_entries, 1)
        rows = entry_rows(self.p, self.index)
        rom = m.submodules.conn = memory.Memory(shape=entry_layout(self.p), depth=depth, init=rows)
        per_entry = [self.weights[r["waddr"]] for r in rows]
        wmem = m.submodules.weights = memory.Memory(shape=self.weight.shape(), depth=depth, init=per_entry)
        rom_rd, w_rd, w_wr = rom.read_port(), wmem.read_port(), wmem.write_port()
        to_drive_end = Signal()  # the walk ends at the drive part's end (else at the list's)
        with m.If(self.start):
            m.d.sync += [self.pos.eq(Mux(self.walk == Walk.STEP, self.n_drive, 0)),
                         to_drive_end.eq(self.walk == Walk.DRIVE)]
        with m.Elif(self.advance):
            m.d.sync += self.pos.eq(self.pos + 1)
        addr = Mux(self.host_rd, self.host_addr, self.pos)
        end = Mux(to_drive_end, self.n_drive - 1, self.n_entries - 1)
        m.d.comb += [self.last.eq(self.pos == end), rom_rd.addr.eq(addr), w_rd.addr.eq(addr),
                     self.entry.eq(rom_rd.data), self.weight.eq(w_rd.data),
                     w_wr.en.eq(self.wr.en), w_wr.addr.eq(self.wr.addr), w_wr.data.eq(self.wr.data)]
        return m
