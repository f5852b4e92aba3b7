"""cocotb testbenches and simulator runners (later issues)."""
