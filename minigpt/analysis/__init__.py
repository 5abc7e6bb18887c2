"""Measurements on scored results: routing, calibration, representation similarity, divergence, seeds."""
