"""Matplotlib figures written to a run directory or to TensorBoard, without a display.

The heatmaps and plots of the methods (SpotTune routing, AdaFilter filter usage, L2T-ww "where"
weights) build a figure; these helpers save it as a PNG file or as PNG bytes and close it.
"""

import io


def pyplot():
    """`matplotlib.pyplot` on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, path):
    """Write `figure` to `path` (the format from its extension) and close it."""
    figure.savefig(path)
    pyplot().close(figure)


def figure_png_bytes(figure):
    """`figure` as PNG bytes (for `tf.summary.image`), closed afterwards."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    pyplot().close(figure)
    return buffer.getvalue()
