"""The closed-form neural tangent denoiser: kernel, Nystrom, twicing and SURE,
the pilot and the guided method. Imports only :mod:`napari_ntd._util`.
"""
