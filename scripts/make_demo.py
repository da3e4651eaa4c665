"""Write the demo input pair: the Middlebury 'motorcycle' stereo pair bundled with scikit-image.

Usage: python scripts/make_demo.py [DIRECTORY]   (default: data/)

Writes DIRECTORY/motorcycle.zarr, a zarr 3 group holding the grey left and right
views as arrays 'left' and 'right' (dims y, x, with pixel-centre coordinates).
The images are (c) Middlebury College stereo data sets (Scharstein et al. 2014),
as redistributed by scikit-image under its BSD licence.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from pipeline.io import write_array
from pipeline.testing import stereo_pair


def main(directory: str = "data") -> None:
    root = Path(directory) / "motorcycle.zarr"
    left, right = stereo_pair()
    coords = {"y": np.arange(left.shape[0], dtype=np.float64), "x": np.arange(left.shape[1], dtype=np.float64)}
    for name, image in (("left", left), ("right", right)):
        write_array(str(root), image, dims=("y", "x"), chunks=(256, 256), name=name, coords=coords)
    print(f"wrote {root}/left and {root}/right: {left.shape} {left.dtype}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
