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
    # The figure without pyplot (its import and backend machinery cost ~0.5 s): an Agg canvas, files only.
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    rows, cols = len(panels), max(len(r) for r in panels)
    height, width = panels[0][0][1].shape
    aspect = height / max(width, 1)
    fig_w = 4.0 * cols + 1.2
    fig_h = 4.0 * aspect * rows + 1.0
    dpi = size / max(fig_w, fig_h)
    fig = Figure(figsize=(fig_w, fig_h), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    cmap = colormaps[NCC_COLORMAP].with_extremes(bad=MISSING_COLOUR)
    grey = colormaps["gray"].with_extremes(bad=MISSING_COLOUR)
    mapped, images = None, []
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
            # Laid out around a one-pixel stand-in of the image's extent, the image itself set only for the
            # final draw: the layout pass would otherwise resample every image once more (~0.7 s at 1600 px).
            extent = (-0.5, image.shape[1] - 0.5, image.shape[0] - 0.5, -0.5)
            if kind == "ncc":
                mapped = ax.imshow(np.zeros((1, 1)), cmap=cmap, vmin=-1.0, vmax=1.0, interpolation="nearest",
                                   extent=extent)
                images.append((mapped, values))
            else:
                finite = image[np.isfinite(image)]
                lo, hi = (np.percentile(finite, [0.5, 99.5]) if finite.size else (0.0, 1.0))
                shown = ax.imshow(np.zeros((1, 1)), cmap=grey, vmin=lo, vmax=hi if hi > lo else lo + 1,
                                  interpolation="nearest", extent=extent)
                images.append((shown, values))
            ax.set_title(caption, fontsize=9)
    if mapped is not None:
        bar = fig.colorbar(mapped, ax=axes, shrink=0.8, ticks=[-1, -0.5, 0, 0.5, 1])
        bar.set_label("local NCC")
        fig.legend(handles=[Patch(color=MISSING_COLOUR, label="NaN / nodata")], loc="lower right", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.get_layout_engine().execute(fig)
    fig.set_layout_engine("none")  # keep that layout: the final draw renders the images once
    for shown, values in images:
        shown.set_data(values)
    target = Path(path)
    partial = target.with_name(f".{target.name}.partial")
    # zlib's fastest level: a noisy map barely compresses better at the default, which takes ~1 s at 1600 px
    fig.savefig(partial, format="png", pil_kwargs={"compress_level": 1})
    partial.replace(target)
