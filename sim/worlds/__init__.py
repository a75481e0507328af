"""sim/worlds."""
