"""Preview pictures of NCC maps (PNG, through matplotlib): the map with a diverging colour map fixed to [-1, 1],
its colour bar and a legend swatch for missing values, optionally beside the two inputs (the classic figure)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["NCC_COLORMAP", "MISSING_COLOUR", "draw_preview"]

#: The map's colour map (diverging: -1 blue, 0 white, +1 red) and the colour of NaN / nodata pixels.
NCC_COLORMAP = "RdBu_r"
MISSING_COLOUR = (0.55, 0.55, 0.55)


def draw_preview(path: str, panels: list[list[tuple[str, np.ndarray, str]]], title: str, size: int) -> None:
    """Write a PNG of ``panels`` (rows of (caption, 2-D image, kind); kind ``ncc`` or ``input``) with ``title``,
    ``size`` pixels along its long side; written to a temporary name, then renamed (never a torn file)."""
    import matplotlib

    matplotlib.use("Agg")  # no screen: files only
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    rows, cols = len(panels), max(len(r) for r in panels)
    height, width = panels[0][0][1].shape
    aspect = height / max(width, 1)
    fig_w = 4.0 * cols + 1.2
    fig_h = 4.0 * aspect * rows + 1.0
    dpi = size / max(fig_w, fig_h)
    fig, axes = plt.subplots(rows, cols, figsize=(fig_w, fig_h), dpi=dpi, squeeze=False, layout="constrained")
    cmap = plt.get_cmap(NCC_COLORMAP).with_extremes(bad=MISSING_COLOUR)
    grey = plt.get_cmap("gray").with_extremes(bad=MISSING_COLOUR)
    mapped = None
    for r, row in enumerate(panels):
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(row):
                ax.set_axis_off()
                continue
            caption, image, kind = row[c]
            values = np.ma.masked_invalid(image)
            if kind == "ncc":
                mapped = ax.imshow(values, cmap=cmap, vmin=-1.0, vmax=1.0, interpolation="nearest")
            else:
                finite = image[np.isfinite(image)]
                lo, hi = (np.percentile(finite, [0.5, 99.5]) if finite.size else (0.0, 1.0))
                ax.imshow(values, cmap=grey, vmin=lo, vmax=hi if hi > lo else lo + 1, interpolation="nearest")
            ax.set_title(caption, fontsize=9)
    if mapped is not None:
        bar = fig.colorbar(mapped, ax=axes, shrink=0.8, ticks=[-1, -0.5, 0, 0.5, 1])
        bar.set_label("local NCC")
        fig.legend(handles=[Patch(color=MISSING_COLOUR, label="NaN / nodata")], loc="lower right", fontsize=8)
    fig.suptitle(title, fontsize=10)
    target = Path(path)
    partial = target.with_name(f".{target.name}.partial")
    fig.savefig(partial, format="png")
    plt.close(fig)
    partial.replace(target)
