"""Adapters: the napari widget, the command line, sample data and file I/O.
They use the public API (``napari_ntd``) only.
"""
