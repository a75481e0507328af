"""sim/train."""
