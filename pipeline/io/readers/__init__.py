"""Readers of inputs, one module per format, behind one surface (:mod:`.inputs`): inspect an input's metadata
without reading data (:class:`.info.InputInfo`), then open what its blocks are read from.

- :mod:`.zarr` zarr arrays (through zarr, or lncc's own chunk reader and cache, :mod:`.chunks`);
- :mod:`.tiff` TIFF, BigTIFF and OME-TIFF files (tifffile's zarr store), by series and level;
- :mod:`.images` single images (imageio), :mod:`.sequence` frame files, :mod:`.video` video (PyAV);
- :mod:`.channels` colour read through the channel policy;
- :mod:`.pair` a pair read block by block with halos, :mod:`.shifted` the moving image through a shift.
"""
