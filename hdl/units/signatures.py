"""Signatures shared by the components (``lib.wiring``), named from the producer's side."""

from __future__ import annotations

from amaranth.hdl import signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import Out

from ..enums import Region
from ..params import CoreParams, bits_for


def check_lane(params: CoreParams, index: int) -> None:
    if not isinstance(index, int) or not 0 <= index < params.layout.P:
        raise ValueError(f"lane: index must be an integer in [0, {params.layout.P}), not {index!r}")


def check_steps(params: CoreParams) -> None:
    """The design's step counts fit the 16-bit registers and step counters."""
    for key, v in (("n_free", params.n_free), ("n_nudged", params.n_nudged)):
        if not 0 <= v < 1 << 16:
            raise ValueError(f"{key}: {v} does not fit the 16-bit step registers")


def rate_layout(params: CoreParams) -> data.ArrayLayout:
    """The core's ``rate`` registers (``Reg.RATE + q``): the on-chip update's multiplier M of
    each layer pair q (``layout.pairs`` order), ``rate_bits`` wide (docs/numerics.md §6)."""
    return data.ArrayLayout(unsigned(params.rate_bits), len(params.layout.pairs))


ROUNDING_MODES = ("floor", "nearest-even", "stochastic")  # what arith.round_shift builds (§3)


def check_rounding(key: str, mode: str) -> None:
    if mode not in ROUNDING_MODES:
        raise ValueError(f"{key}: {mode!r} is not one of {', '.join(ROUNDING_MODES)} (docs/numerics.md §3)")


def check_words(name: str, values, count: int, fmt) -> list[int]:
    """``values`` as ``count`` raw integers of format ``fmt`` (ValueError naming ``name`` otherwise)."""
    values = [0] * count if values is None else list(values)
    if len(values) != count:
        raise ValueError(f"{name}: {len(values)} values given, the lane has {count}")
    for k, v in enumerate(values):
        if int(v) != v or not fmt.min_raw <= v <= fmt.max_raw:
            raise ValueError(f"{name}[{k}]: {v} is not a raw integer of {fmt} "
                             f"([{fmt.min_raw}, {fmt.max_raw}])")
    return [int(v) for v in values]


N_BUFFERS = 3  # state buffers per bank (docs/hardware.md: two for the relaxation, one for s^0)


def buffer_bits(n: int) -> int:
    """Bits of a neuron's index in a buffer of a bank of ``n`` neurons: buffers start at
    multiples of 2^buffer_bits >= n, so that a bank address is the buffer's number and the
    index side by side (``banks.bank_address``: wires, no adder on the bank's address path)."""
    return (n - 1).bit_length() if n > 1 else 0


def bank_depth(n: int) -> int:
    """Words of a state bank of ``n`` neurons: three buffers of 2^buffer_bits(n) words (the
    last buffer's tail and each buffer's words past ``n`` unused)."""
    return N_BUFFERS << buffer_bits(n) if n > 0 else 1


def bank_bits(params: CoreParams, w: int | None = None) -> int:
    """Address bits of state bank ``w`` (None: of the largest lane's, the width of an address
    that any bank takes)."""
    lay = params.layout
    return bits_for(bank_depth(lay.neurons_per_lane if w is None else len(lay.lanes[w].neurons)))


def loc_bits(params: CoreParams) -> int:
    """Bits of a neuron's local index in its lane."""
    return bits_for(params.layout.neurons_per_lane)


def entry_bits(n_entries: int) -> int:
    """Bits of an entry counter that runs from 0 to ``n_entries``."""
    return bits_for(n_entries + 1)


def entry_layout(params: CoreParams) -> data.StructLayout:
    """One entry of a lane's connection list (``layout.Entry``): the fields FaninStore's walk
    gives (and RomFaninStore's connection ROM holds)."""
    lay = params.layout
    return data.StructLayout({
        "sel_in": 1,  # the source is an input (read the input memory), else a state (read bank sbank)
        "saddr": bits_for(max(lay.n_in, lay.neurons_per_lane)),  # input index, or the source's local index
        "sbank": bits_for(lay.P),  # the lane that owns the source neuron
        "nloc": loc_bits(params),  # the target neuron's local index in this lane
        "nidx": bits_for(lay.S),  # its global non-input index (state events, §5)
        "edge": bits_for(lay.n_slots + 1),  # its connection's slot (update events, §5)
        "pair": bits_for(len(lay.pairs)),  # its layer pair (the rate multiplier, §6)
        "first": 1,  # the neuron's first entry: the accumulator restarts
        "last": 1,  # its last entry: the sum goes to the neuron unit
        "dummy": 1,  # a hole of a dense segment, or a neuron without sources in the part:
        # weight 0, multiplies by 0, never updated
        "out": 1,  # the neuron is an output (nudged in the weakly-clamped phase)
        "waddr": waddr_bits(params),  # where its weight is stored (layout.py; P > 1: the entry)
        "mirror": 1,  # P = 1: the other end's entry writes this weight; the update skips it
    })


def waddr_bits(params: CoreParams) -> int:
    """Bits of a weight address (any lane's: ``Layout.lane_words`` words)."""
    return bits_for(params.layout.lane_words)


def write_signature(addr_bits: int, shape) -> wiring.Signature:
    """A memory write: ``en``, ``addr``, ``data`` (one word per cycle)."""
    return wiring.Signature({"en": Out(1), "addr": Out(addr_bits), "data": Out(shape)})


def bank_write_signature(params: CoreParams, w: int | None = None) -> wiring.Signature:
    """One state written into bank ``w`` (address = buffer offset + local index, as wide as
    the bank's)."""
    return write_signature(bank_bits(params, w), params.state.n_word)


def per_bank(params: CoreParams, name: str, member) -> dict:
    """Signature members ``NAME0`` ... ``NAME{P-1}``, ``member(w)`` each (a bank's write port:
    each as wide as its bank, which an array of one signature cannot be); the component lists
    them as ``NAME`` (:func:`bank_list`)."""
    return {f"{name}{w}": member(w) for w in range(params.layout.P)}


def bank_list(component, params: CoreParams, name: str) -> list:
    """The members ``NAME0`` ... of :func:`per_bank`, in bank order."""
    return [getattr(component, f"{name}{w}") for w in range(params.layout.P)]


def neuron_sum_signature(params: CoreParams) -> wiring.Signature:
    """MacPipeline -> NeuronUnit: a neuron's accumulated sum (one-cycle ``valid``)."""
    lay = params.layout
    return wiring.Signature({
        "valid": Out(1),
        "acc": Out(signed(params.acc_exact_bits)),  # §2 without the bias
        "loc": Out(loc_bits(params)),
        "idx": Out(bits_for(lay.S)),
        "out": Out(1),
    })


def host_field_bits(params: CoreParams) -> int:
    """Bits of the per-lane offset inside the weight/bias/target/state regions."""
    lay = params.layout
    return max(bits_for(lay.lane_words), bits_for(3 * lay.neurons_per_lane), bits_for(lay.n_in))


def host_data_bits(params: CoreParams) -> int:
    """Bits of a word the host writes into a lane's memories: the widest of a stored weight,
    a bias and a state (a target is one bit); the bus word's low bits."""
    num = params.num
    return max(num.weight_store.n_word, num.bias.n_word, params.state.n_word)


def lane_host_signature(params: CoreParams) -> wiring.Signature:
    """HostDecoder -> every lane's HostPort: one host access, decoded. ``we`` is high only
    while the core is idle; ``wdata`` is the bus word's low ``host_data_bits``; ``rdata``
    answers a read four cycles after its address (the lane registers the access, its HostPort
    the word, then the region's word)."""
    return wiring.Signature({
        "region": Out(Region),
        "sel": Out(bits_for(params.layout.P)),  # the address's lane field: lane (weight, bias,
        # target) or bank (state, s0, final)
        "buf": Out(2),  # the state buffer a bank read or write addresses
        "addr": Out(host_field_bits(params)),  # entry, local neuron or input index
        "wdata": Out(host_data_bits(params)),
        "we": Out(1),
        "rdata": wiring.In(32),
    })


def lane_control_signature(params: CoreParams) -> wiring.Signature:
    """PhaseController -> every lane: what a step or the update does."""
    from ..enums import LaneMode

    return wiring.Signature({
        "start": Out(1),  # pulse: begin a relaxation step or the update pass
        "mode": Out(LaneMode),
        "nudge": Out(1),  # the weakly-clamped phase: output neurons get the beta term (§4 step 4)
        "rd_buf": Out(2),  # the state buffer a relaxation step reads (the previous step's states)
        "wr_buf": Out(2),  # the state buffer it writes
        "s0_buf": Out(2),  # where s^0 (the free phase's last state) is
        "sb_buf": Out(2),  # where s^beta (the weakly-clamped phase's last state) is
        "ev_base": Out(32),  # first random event of the step (state stream) or update (§5)
    })
