"""The components a Lane and the Core are built from (docs/rtl.md maps them).

Lane: ``FaninStore`` (the counter walk of the lane's lists and the stored weights;
``RomFaninStore``, its connection-ROM reference, for the tests), ``StateBanks`` (the
lane's copies of every lane's states), ``MacPipeline`` (the relaxation's
multiply-accumulate walk), ``NeuronUnit`` (eq. 5's step, the nudge, rounding,
clip, the settle flag), ``UpdateUnit`` (eqs. 7-8), ``HostPort`` (host access to
the lane's memories). Core: ``HostDecoder`` (registers, host bus, irq),
``PhaseController`` (phases, steps, buffers, event numbers, cycle counters),
``ArgMax``.
"""

from .argmax import ArgMax
from .banks import StateBanks, bank_address, buffer_offset
from .decoder import HostDecoder
from .fanin import FaninStore, RomFaninStore
from .lanehost import HostPort
from .mac import MacPipeline
from .neuron import NeuronUnit
from .phase import PhaseController
from .update import UpdateUnit

__all__ = ["ArgMax", "FaninStore", "HostDecoder", "HostPort", "MacPipeline", "NeuronUnit", "PhaseController",
           "RomFaninStore", "StateBanks", "UpdateUnit", "bank_address", "buffer_offset"]
