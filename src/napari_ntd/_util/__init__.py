"""Small shared utilities: options, checks, progress, the compute pool, tile geometry.

The bottom layer: imports nothing else from napari_ntd.
"""
