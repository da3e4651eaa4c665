"""Readers of inputs, one module per format: zarr now (through zarr, or lncc's own chunk reader and cache).

TIFF, images and video come later, each as a module here with the same surface: inspect an input's
metadata without reading data, and open it lazily or as a pair that tasks read block by block.
"""
