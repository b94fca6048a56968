"""What L2T-ww learned: the mean "where" weight lambda of each (source stage, target stage) pair,
as a table (metrics.json), a heatmap (the run directory and TensorBoard) and per-epoch scalars."""

import numpy as np
from keras import ops

from models.epoch_monitor import EpochMonitor
from models.figures import figure_png_bytes, pyplot, save_figure


def where_table(term, dataset, max_batches=None):
    """Mean "where" weight and mean "what" entropy of every pair of `term` over `dataset` (images, labels).

    Returns:
        {"pairs": ["m-n", ...], "where": [mean lambda per pair], "what_entropy": [mean entropy of the
        channel weights, in nats, per pair: log C when uniform], "matrix": source stages x target
        stages of mean lambda (None where no pair), "source_stages": [...], "target_stages": [...],
        "images": n}.
    """
    sums = np.zeros(len(term.pairs))
    entropies = np.zeros(len(term.pairs))
    count = 0
    for index, (images, _) in enumerate(dataset):
        if max_batches is not None and index >= max_batches:
            break
        what, where = term.pair_weights(term.source_features(images))
        batch = int(ops.shape(images)[0])
        for p, (w, lam) in enumerate(zip(what, where)):
            w = np.asarray(ops.convert_to_numpy(w), "float64")
            sums[p] += float(np.sum(ops.convert_to_numpy(lam)))
            entropies[p] += float(np.sum(-w * np.log(np.maximum(w, 1e-12))))
        count += batch
    means = (sums / max(count, 1)).tolist()
    sources = sorted({m for m, _ in term.pairs})
    targets = sorted({n for _, n in term.pairs})
    matrix = [[None] * len(targets) for _ in sources]
    for (m, n), value in zip(term.pairs, means):
        matrix[sources.index(m)][targets.index(n)] = round(value, 6)
    return {
        "pairs": [f"{m}-{n}" for m, n in term.pairs],
        "where": [round(v, 6) for v in means],
        "what_entropy": [round(v / max(count, 1), 6) for v in entropies],
        "matrix": matrix,
        "source_stages": sources,
        "target_stages": targets,
        "images": count,
    }


def heatmap_figure(table, title='L2T-ww "where" weight per (source, target) stage pair'):
    """A matplotlib figure: source stages (rows) by target stages (columns), the mean lambda written in each cell."""
    plt = pyplot()

    matrix = np.asarray([[np.nan if v is None else v for v in row] for row in table["matrix"]], "float64")
    figure, axis = plt.subplots(figsize=(max(3.5, 0.8 * matrix.shape[1] + 2.0), max(2.5, 0.6 * matrix.shape[0] + 1.2)), dpi=100)
    image = axis.imshow(matrix, vmin=0.0, vmax=max(1.0, float(np.nanmax(matrix)) if np.isfinite(matrix).any() else 1.0), cmap="viridis")
    axis.set_xticks(range(matrix.shape[1]), [str(n) for n in table["target_stages"]])
    axis.set_yticks(range(matrix.shape[0]), [str(m) for m in table["source_stages"]])
    axis.set_xlabel("target stage")
    axis.set_ylabel("source stage")
    for r in range(matrix.shape[0]):
        for c in range(matrix.shape[1]):
            if np.isfinite(matrix[r, c]):
                axis.text(c, r, f"{matrix[r, c]:.2f}", ha="center", va="center", fontsize=7, color="w")
    axis.set_title(title, fontsize=8)
    figure.colorbar(image, ax=axis, fraction=0.04)
    figure.tight_layout()
    return figure


def save_heatmap(table, path):
    save_figure(heatmap_figure(table), path)


def heatmap_png_bytes(table):
    return figure_png_bytes(heatmap_figure(table))


class WhereMonitor(EpochMonitor):
    """Logs the learned "where" weights every epoch: TensorBoard scalars `where/M-N` and the image
    `where/heatmap` (in `log_dir`), and `where_M-N` in the epoch logs (history.csv, metrics.json's history).

    Args:
        term: the trained `WeightedFeatureMatching`.
        dataset: finite (images, labels) batches to measure on (the validation data).
        log_dir: TensorBoard directory.
        max_batches: cap on the batches measured per epoch.
    """

    def __init__(self, term, dataset, log_dir, max_batches=4):
        super().__init__(log_dir)
        self.term = term
        self.dataset = dataset
        self.max_batches = max_batches

    def measure(self):
        table = where_table(self.term, self.dataset, self.max_batches)
        pairs = list(zip(table["pairs"], table["where"]))
        return {
            "scalars": {f"where/{pair}": value for pair, value in pairs},
            "images": {"where/heatmap": heatmap_png_bytes(table)},
            "logs": {f"where_{pair}": value for pair, value in pairs},
        }
