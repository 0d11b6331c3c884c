"""Edge Impulse processing blocks and their numerics. Nothing in this package knows about HTTP."""
