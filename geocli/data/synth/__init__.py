"""Small, learnable datasets written in the real on-disk formats, for demos and end-to-end tests.

Each generator renders or draws its data with NumPy/OpenCV only (no MindSpore), writes it exactly as
the real dataset is laid out, so the same parser, converter and training code run on it, and skips the
work when the requested dataset is already there.
"""
