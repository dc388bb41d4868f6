"""Pure-PyTorch policy: shared trunk, per-hardware stems and heads, adapters and learners (to come)."""
