"""Write the demo input pairs, both real image content bundled with scikit-image.

Usage: python scripts/make_demo.py [DIRECTORY]   (default: data/)

Writes two zarr 3 groups (dims y, x, with pixel-centre coordinates):

* DIRECTORY/scene.zarr, arrays 'before' and 'after': two captures of one scene, the second moved by a
  subpixel shift (5.4, -3.7) px, with another gain and offset, sensor noise, and one region changed
  (:func:`pipeline.testing.moved_capture`). Registration aligns them; the map is then high where the
  captures agree and low where the scene changed.
* DIRECTORY/motorcycle.zarr, arrays 'left' and 'right': the Middlebury 'motorcycle' stereo views, whose
  disparity varies with depth: no single shift aligns them, and the local method's shift field shows it.

The images are (c) Middlebury College stereo data sets (Scharstein et al. 2014), as redistributed by
scikit-image under its BSD licence.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from pipeline.io import write_array
from pipeline.testing import moved_capture, stereo_pair


def _write(root: Path, images: dict[str, np.ndarray]) -> None:
    shape = next(iter(images.values())).shape
    coords = {"y": np.arange(shape[0], dtype=np.float64), "x": np.arange(shape[1], dtype=np.float64)}
    for name, image in images.items():
        write_array(str(root), image, dims=("y", "x"), chunks=(256, 256), name=name, coords=coords)
    print(f"wrote {root}: {', '.join(images)} {shape} {next(iter(images.values())).dtype}")


def main(directory: str = "data") -> None:
    before, after, _ = moved_capture()
    _write(Path(directory) / "scene.zarr", {"before": before, "after": after})
    left, right = stereo_pair()
    _write(Path(directory) / "motorcycle.zarr", {"left": left, "right": right})


if __name__ == "__main__":
    main(*sys.argv[1:2])
