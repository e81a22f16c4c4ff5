"""Deep image prior: networks, trainers and the U-Net's tangent kernel.
Imports only :mod:`napari_ntd._util` and :mod:`napari_ntd._ntk`.
"""
