"""What AdaFilter's gates chose: per layer, per filter and per class, the fraction of images that used the
fine-tuned filter (g = 1), and a plot of it.

    per_layer[l]      = mean over images and filters of g_l
    per_filter[l][f]  = mean over images of g_l[f]
    per_class[c][l]   = mean over the images of class c and over filters of g_l

Method page: docs/methods/adafilter.md.
"""

import numpy as np

from models.adafilter.classifier import gate_model, gated_layers
from models.figures import pyplot, save_figure


def filter_usage(network, dataset, class_names, max_batches=None):
    """Usage statistics of an AdaFilter `network` over a finite dataset of (images, labels) (deterministic gates)."""
    view = gate_model(network)
    layers = [layer.name for layer in gated_layers(network)]
    num_classes = len(class_names)
    filter_sums = None
    class_sums = np.zeros((num_classes, len(layers)))
    counts = np.zeros(num_classes)
    for step, (images, labels) in enumerate(dataset):
        if max_batches is not None and step >= max_batches:
            break
        gates = view(images, training=False)
        gates = [np.asarray(g, dtype=np.float64) for g in (gates if isinstance(gates, (list, tuple)) else [gates])]
        labels = np.asarray(labels, dtype=np.int64)
        if filter_sums is None:
            filter_sums = [np.zeros(g.shape[1]) for g in gates]
        for index, g in enumerate(gates):
            filter_sums[index] += g.sum(axis=0)
            np.add.at(class_sums[:, index], labels, g.mean(axis=1))
        counts += np.bincount(labels, minlength=num_classes)
    images = int(counts.sum())
    if filter_sums is None or images == 0:
        return {"layers": layers, "per_layer": [], "per_filter": {}, "per_class": {}, "images": 0}
    per_filter = {name: (sums / images).round(4).tolist() for name, sums in zip(layers, filter_sums)}
    return {
        "layers": layers,
        "per_layer": [round(float(np.mean(per_filter[name])), 6) for name in layers],
        "per_filter": per_filter,
        "per_class": {
            name: (class_sums[c] / counts[c]).round(6).tolist() for c, name in enumerate(class_names) if counts[c] > 0
        },
        "images": images,
        "overall": round(float(sum(s.sum() for s in filter_sums) / (images * sum(len(s) for s in filter_sums))), 6),
    }


def usage_figure(statistics):
    """Two panels: classes by gated layers (fraction fine-tuned), and the fraction per layer."""
    plt = pyplot()

    names = list(statistics["per_class"])
    matrix = np.asarray([statistics["per_class"][n] for n in names] + [statistics["per_layer"]])
    rows = names + ["all"]
    layers = matrix.shape[1]
    figure, (top, bottom) = plt.subplots(
        2, 1, figsize=(max(5.0, 0.18 * layers + 2.5), max(4.0, 0.3 * len(rows) + 3.0)), dpi=100,
        gridspec_kw={"height_ratios": [max(2, len(rows)), 3]},
    )
    image = top.imshow(matrix, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    top.set_yticks(range(len(rows)), rows, fontsize=7)
    top.set_title("AdaFilter: fraction of filters x images using the fine-tuned filter", fontsize=9)
    figure.colorbar(image, ax=top, fraction=0.04)
    bottom.bar(range(layers), statistics["per_layer"], color="tab:blue")
    bottom.set_xlim(-0.5, layers - 0.5)
    bottom.set_ylim(0, 1)
    bottom.set_xlabel("gated convolution (data-flow order)")
    bottom.set_ylabel("fine-tuned")
    figure.tight_layout()
    return figure


def save_usage_plot(statistics, path):
    save_figure(usage_figure(statistics), path)
