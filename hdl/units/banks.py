"""A lane's copies of every lane's states: P banks, three buffers each."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Value
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from ..params import CoreParams
from .signatures import (N_BUFFERS, bank_depth, bank_list, bank_write_signature, buffer_bits, check_lane, loc_bits,
                         per_bank)


def _check_buf(buf: int):
    if not 0 <= buf < N_BUFFERS:
        raise ValueError(f"buf: {buf} is not a state buffer (0-{N_BUFFERS - 1})")


def buffer_offset(buf: int, n: int) -> int:
    """Where buffer ``buf`` (0, 1 or 2) of a bank of ``n`` neurons starts: ``buf x
    2^buffer_bits(n)`` (signatures.bank_depth)."""
    _check_buf(buf)
    return buf << buffer_bits(n)


def bank_address(buf: Value | int, loc: Value | int, n: int) -> Value | int:
    """The address of neuron ``loc``'s word in buffer ``buf`` of a bank of ``n`` neurons:
    ``buf`` and the low ``buffer_bits(n)`` bits of ``loc`` side by side. The one place a bank
    address is computed; on Values it is wires only (no adder between the units' registers
    and the bank memories: docs/rtl.md "Bank addresses, registered selects, two-cycle host
    reads")."""
    k = buffer_bits(n)
    if isinstance(buf, int) and isinstance(loc, int):
        if not 0 <= loc < max(n, 1):
            raise ValueError(f"loc: {loc} is not a neuron of a bank of {n}")
        return buffer_offset(buf, n) + loc
    if isinstance(buf, int):
        _check_buf(buf)
    return Cat(Value.cast(loc)[:k], Value.cast(buf)[:2]) if k else Value.cast(buf)[:2]


class StateBanks(wiring.Component):
    """The state memories of lane ``index``: bank ``w`` holds the states of lane ``w``'s
    neurons (written only by lane ``w``, through ``write[w]``; the core fans every lane's
    results out to every lane), so the lane reads any source neuron every cycle without
    conflicts. Each bank has three buffers of 2^buffer_bits(n_w) >= ``n_w`` words
    (docs/hardware.md: the relaxation alternates two, s^0 stays in the third during the
    weakly-clamped phase).

    Ports (reads are synchronous: data one cycle after the address):

    - ``write[w]`` (in, ports ``write0`` ...): en, addr (``bank_address``, as wide as bank
      w's), data: a write into bank w.
    - ``src_buf``, ``src_loc`` (in) -> ``src_data[w]`` (out): every bank's word at
      ``bank_address(src_buf, src_loc, n_w)`` (the MAC's and the update's source reads,
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
            "src_buf": In(2), "src_loc": In(loc_bits(params)), "src_data": Out(sw).array(P),
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
                                                            depth=bank_depth(n), init=[],
                                                            attrs={"no_rw_check": 1})
            wp = bank.write_port()
            m.d.comb += [wp.en.eq(self.write[w].en), wp.addr.eq(self.write[w].addr),
                         wp.data.eq(self.write[w].data)]
            rd = bank.read_port()
            m.d.comb += [rd.addr.eq(bank_address(self.src_buf, self.src_loc, n)), self.src_data[w].eq(rd.data)]
            if w == self.index:
                own = bank.read_port()
                m.d.comb += [own.addr.eq(bank_address(self.own_buf, self.own_loc, n)), self.own_data.eq(own.data)]
        return m
