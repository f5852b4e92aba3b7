"""Every code of the core, named once (``amaranth.lib.enum``).

One enum per kind of code, shared by the RTL (``lane.py``, ``core.py``, the
components in ``units/``), the host side (``memory_map.py``, ``driver.py``)
and the generator's manifest. The integers are the host-visible encodings of
docs/hardware.md "Registers and host sequences": changing one changes the
memory map.
"""

from amaranth.lib import enum

# Word addresses on the host bus: (region << REGION_SHIFT) | offset.
ADDR_BITS = 24
REGION_SHIFT = 20


class Region(enum.Enum, shape=ADDR_BITS - REGION_SHIFT):
    """The region field of a host address (its top 4 bits). The core decodes it and hands
    it on unchanged to the lanes (``HostPort``): one numbering for core, lanes, memory
    map and manifest."""
    REG = 0  # registers (Reg)
    INPUT = 1  # input pixel j at offset j, broadcast to every lane
    TARGET = 2  # per lane: the target bit of its output neurons
    STATE = 3  # per lane: the start state (write)
    S0 = 4  # per lane: the free equilibrium s^0 (read)
    FINAL = 5  # per lane: the state after the weakly-clamped phase (read)
    WEIGHT = 6  # per lane and entry: the stored weight
    BIAS = 7  # per lane and neuron: the bias

    @property
    def key(self) -> str:
        """The name the manifest and ``MemoryMap`` use (``"reg"``, ``"s0"``, ...)."""
        return self.name.lower()


class Reg(enum.Enum, shape=REGION_SHIFT):
    """Register word offsets in region ``Region.REG`` (docs/hardware.md "Registers")."""
    CTRL = 0  # write: Ctrl bits
    STATUS = 1  # read: Status bits; write 1 to bit 2 (WR_ERR) clears it
    BETA_NEG = 2  # bit 0: the weakly-clamped phase nudges with -beta
    EXAMPLE = 3  # the example's number in the state-rounding stream (numerics.md §5)
    UPDATE = 4  # the update's number in the weight-rounding stream (§5)
    PRED = 5  # arg-max of the outputs after an inference
    CYCLES_FREE = 6
    CYCLES_NUDGED = 7
    CYCLES_UPDATE = 8
    N_FREE = 9
    N_NUDGED = 10
    CYCLES_TOTAL = 11
    SETTLE_TOL = 12  # §4a: largest change (state LSBs) that counts as quiet
    SETTLE_STEPS = 13  # §4a: quiet steps that end a free phase (0: off)
    FREE_STEPS = 14  # §4a: steps the last free phase took (read-only)
    RATE = 16  # §6: words RATE + q, q < len(Layout.pairs): the on-chip update's multiplier M of pair q

    @property
    def key(self) -> str:
        return self.name.lower()


class Ctrl(enum.Flag, shape=2):
    """Bits of a write to ``Reg.CTRL``."""
    START = 1  # start an example (ignored while busy)
    INFER = 2  # with START: free phase, then the arg-max (no weakly-clamped phase, no update)


class Status(enum.Flag, shape=3):
    """Bits of ``Reg.STATUS``."""
    BUSY = 1
    DONE = 2  # an example ended; sticky until the next start
    WR_ERR = 4  # sticky: a write arrived while busy and was dropped

    @classmethod
    def finished(cls, word: int) -> bool:
        """A status word read by the host says the example is over: done and not busy."""
        st = cls(word & 0b111)
        return cls.DONE in st and cls.BUSY not in st


class Phase(enum.Enum, shape=3):
    """The core's phase (``PhaseController``; the paper's section 5.1 and Figure 6)."""
    IDLE = 0
    DRIVE = 5  # the drive pass: the clamped inputs' part of every sum, once per example (numerics.md §2)
    FREE = 1  # free relaxation, at most n_free steps (the settle rule may end it, §4a)
    NUDGED = 2  # weakly-clamped relaxation, n_nudged steps (§4 step 4)
    UPDATE = 3  # the lanes' local weight and bias update (§6)
    ARGMAX = 4  # inference: scan the output neurons of s^0


class LaneMode(enum.Enum, shape=2):
    """What a lane's ``start`` pulse begins."""
    RELAX = 0  # one relaxation step over the step entries (MacPipeline, NeuronUnit)
    UPDATE = 1  # the update pass over all the lane's entries and its biases (UpdateUnit)
    DRIVE = 2  # the drive pass over the drive entries: D_i into the drive memory (MacPipeline, NeuronUnit)


class Walk(enum.Enum, shape=2):
    """The range of a lane's entries a FaninStore walk covers (``layout.py``: the drive
    entries ``[0, n_drive)``, then the step entries ``[n_drive, n_total)``)."""
    DRIVE = 0  # [0, n_drive): the drive pass
    STEP = 1  # [n_drive, n_total): a relaxation step
    ALL = 2  # [0, n_total): the update (eqs. 7-8 update every connection, inputs included)


class UpdateState(enum.Enum, shape=4):
    """The update unit's states (§6): the entries in ``W_RUN``, one every 4 cycles (the
    phase counter ``ph``; an entry's products and write-back overlap the next entries',
    docs/rtl.md "UpdateUnit"), ``W_DRAIN`` (2 cycles: the last entry's products), then 9
    cycles per bias (B_*; B_RND takes four). The products run through one DSP, one per
    cycle."""
    IDLE = 0
    W_RUN = 1  # the entries: ph 0 walk at the entry (its weight read); 1 fields in, s^0 reads;
    #            2 operands s^0_i, s^0_j, s^beta reads; 3 operands s^b_i, s^b_j, the walk moves on
    W_DRAIN = 2  # the last entry's operands M, s^0_i s^0_j and M, s^b_i s^b_j (ph 0, 1)
    B_ISSUE = 3  # bias and s^0_i reads issued; the event registered
    B_S0 = 4  # bias, s^0_i in (operands M, s^0_i); s^beta_i read issued
    B_SB = 5  # s^b_i in (operands M, s^b_i); product M s^0_i
    B_MUL = 6  # product M s^b_i
    B_PD = 7  # sigma D_b M = sigma (M s^b_i - M s^0_i)
    B_RND = 8  # round (floor and round-up bit), their add, the add to b, saturate and write (four cycles)


# Plain-integer aliases: the names other modules (generate.py, the benches) import.
REGIONS = {r.key: r.value for r in Region}
REGISTERS = {r.key: r.value for r in Reg}
CTRL_START = Ctrl.START.value
CTRL_INFER = Ctrl.INFER.value
STATUS_BUSY = Status.BUSY.value
STATUS_DONE = Status.DONE.value
STATUS_WR_ERR = Status.WR_ERR.value
