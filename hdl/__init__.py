"""Amaranth RTL for EqProp neurons and synapses (later issues)."""
