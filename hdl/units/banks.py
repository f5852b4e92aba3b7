"""A lane's copies of every lane's states: P banks, three buffers each."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Value
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from ..params import CoreParams
from .signatures import bank_bits, bank_list, bank_write_signature, check_lane, loc_bits, per_bank

N_BUFFERS = 3


def buffer_offset(buf: Value | int, n: int) -> Value | int:
    """Where buffer ``buf`` (0, 1 or 2) of a bank of ``n`` neurons starts: ``buf * n``.
    The one place a bank address is computed (buffer offset + local index)."""
    if isinstance(buf, int):
        if not 0 <= buf < N_BUFFERS:
            raise ValueError(f"buf: {buf} is not a state buffer (0-{N_BUFFERS - 1})")
        return buf * n
    return Mux(buf == 0, 0, Mux(buf == 1, n, 2 * n))


class StateBanks(wiring.Component):
    """The state memories of lane ``index``: bank ``w`` holds the states of lane ``w``'s
    neurons (written only by lane ``w``, through ``write[w]``; the core fans every lane's
    results out to every lane), so the lane reads any source neuron every cycle without
    conflicts. Each bank has three buffers of ``n_w`` words (docs/hardware.md: the
    relaxation alternates two, s^0 stays in the third during the weakly-clamped phase).

    Ports (reads are synchronous: data one cycle after the address):

    - ``write[w]`` (in, ports ``write0`` ...): en, addr (buffer offset + local index, as wide
      as bank w's), data: a write into bank w.
    - ``src_buf``, ``src_loc`` (in) -> ``src_data[w]`` (out): every bank's word at
      ``buffer_offset(src_buf, n_w) + src_loc`` (the MAC's and the update's source reads,
      the host's state reads).
    - ``own_buf``, ``own_loc`` (in) -> ``own_data`` (out): this lane's own bank, a second
      read port (the neuron's old state, s_i in the update).
    """

    LATENCY = 1  # address -> data

    def __init__(self, params: CoreParams, index: int):
        check_lane(params, index)
        self.p = params
        self.index = index
        self.sizes = [len(ln.neurons) for ln in params.layout.lanes]
        P, sw = params.layout.P, params.state.n_word
        super().__init__({
            **per_bank(params, "write", lambda w: In(bank_write_signature(params, w))),
            "src_buf": In(2), "src_loc": In(bank_bits(params)), "src_data": Out(sw).array(P),
            "own_buf": In(2), "own_loc": In(loc_bits(params)), "own_data": Out(sw),
        })
        self.write = bank_list(self, params, "write")

    def elaborate(self, platform):
        m = Module()
        for w, n in enumerate(self.sizes):
            # ``no_rw_check``: a read never meets a write of the same word in one cycle (the
            # relaxation reads ``rd_buf`` while it writes ``wr_buf``, the update and the arg-max
            # only read, the host writes only while the core is idle), so synthesis needs no
            # logic for that case (Yosys adds an address compare and a bypass mux otherwise,
            # on the host's and the arg-max's read path: docs/rtl.md "Registered DSPs")
            bank = m.submodules[f"bank{w}"] = memory.Memory(shape=self.p.state.n_word,
                                                            depth=max(N_BUFFERS * n, 1), init=[],
                                                            attrs={"no_rw_check": 1})
            wp = bank.write_port()
            m.d.comb += [wp.en.eq(self.write[w].en), wp.addr.eq(self.write[w].addr),
                         wp.data.eq(self.write[w].data)]
            rd = bank.read_port()
            m.d.comb += [rd.addr.eq(buffer_offset(self.src_buf, n) + self.src_loc), self.src_data[w].eq(rd.data)]
            if w == self.index:
                own = bank.read_port()
                m.d.comb += [own.addr.eq(buffer_offset(self.own_buf, n) + self.own_loc), self.own_data.eq(own.data)]
        return m
