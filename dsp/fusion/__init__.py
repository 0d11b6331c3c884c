"""Sensor fusion: the fuzzy inference engine and off-arm block, orientation filters, Kalman filters, the kalman block."""
