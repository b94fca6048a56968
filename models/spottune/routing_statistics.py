"""What a SpotTune policy learned: per-block routing fractions, overall and per class, and a heatmap.

`fraction_finetuned[l]` is the share of images whose block l ran its fine-tuned copy (the
deterministic decision unless the model was switched to sampling); `per_class[c][l]` the same
over the images of class c.

Method page: docs/methods/spottune.md.
"""

import numpy as np

from models.figures import figure_png_bytes, pyplot, save_figure
from models.spottune.classifier import routing_model


def routing_statistics(network, dataset, class_names, max_batches=None):
    """Routing fractions of `network` (a SpotTune model) over a finite dataset of (images, labels)."""
    view = routing_model(network)
    num_classes = len(class_names)
    sums, counts, total = None, np.zeros(num_classes), None
    for step, (images, labels) in enumerate(dataset):
        if max_batches is not None and step >= max_batches:
            break
        decisions = np.asarray(view(images, training=False)["decisions"], dtype=np.float64)
        labels = np.asarray(labels, dtype=np.int64)
        if sums is None:
            sums = np.zeros((num_classes, decisions.shape[1]))
            total = np.zeros(decisions.shape[1])
        np.add.at(sums, labels, decisions)
        counts += np.bincount(labels, minlength=num_classes)
        total += decisions.sum(axis=0)
    if sums is None:
        return {"fraction_finetuned": [], "per_class": {}, "images": 0}
    images = int(counts.sum())
    per_class = {
        name: (sums[c] / counts[c]).round(6).tolist() for c, name in enumerate(class_names) if counts[c] > 0
    }
    return {"fraction_finetuned": (total / max(images, 1)).round(6).tolist(), "per_class": per_class, "images": images}


def heatmap_figure(statistics, title="fraction of images routed to the fine-tuned copy"):
    """A matplotlib figure: blocks (columns) by classes (rows), plus an 'all' row."""
    plt = pyplot()

    names = list(statistics["per_class"])
    matrix = np.asarray([statistics["per_class"][n] for n in names] + [statistics["fraction_finetuned"]])
    rows = names + ["all"]
    blocks = matrix.shape[1]
    figure, axis = plt.subplots(figsize=(max(4.0, 0.5 * blocks + 2.5), max(2.5, 0.32 * len(rows) + 1.2)), dpi=100)
    image = axis.imshow(matrix, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    axis.set_xticks(range(blocks), [str(b + 1) for b in range(blocks)])
    axis.set_yticks(range(len(rows)), rows, fontsize=7)
    axis.set_xlabel("block")
    axis.set_title(title, fontsize=9)
    figure.colorbar(image, ax=axis, fraction=0.04)
    figure.tight_layout()
    return figure


def save_heatmap(statistics, path):
    save_figure(heatmap_figure(statistics), path)


def heatmap_png_bytes(statistics):
    return figure_png_bytes(heatmap_figure(statistics))
