"""Execution: one image through a method (noise model, sigma, centring, tiles),
stacks, dask arrays, noise models. Imports the algorithms and the utilities.
"""
