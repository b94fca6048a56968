"""A Keras callback that logs, every epoch, where a SpotTune policy sends each block."""

from models.epoch_monitor import EpochMonitor


class RoutingMonitor(EpochMonitor):
    """Logs what a SpotTune policy does, every epoch, to TensorBoard (`<logs>/routing`).

    Scalars `routing/block_XX` (fraction of validation images sent to the fine-tuned copy of
    block XX) and an image `routing/heatmap` (blocks by classes). The fractions are also added to
    the epoch logs as `routing_block_XX`, so they reach history.csv.

    Args:
        network: the SpotTune classifier being trained (not the trainer wrapping it).
        dataset: a finite dataset of (images, labels) to measure on (validation data).
        class_names: class names in label order.
        log_dir: TensorBoard directory for the routing writer.
        max_batches: cap on the batches measured per epoch.
    """

    def __init__(self, network, dataset, class_names, log_dir, max_batches=8):
        super().__init__(log_dir)
        self.network = network
        self.dataset = dataset
        self.class_names = list(class_names)
        self.max_batches = max_batches

    def measure(self):
        from models.spottune.routing_statistics import heatmap_png_bytes, routing_statistics

        statistics = routing_statistics(self.network, self.dataset, self.class_names, self.max_batches)
        fractions = {f"block_{index + 1:02d}": value for index, value in enumerate(statistics["fraction_finetuned"])}
        return {
            "scalars": {f"routing/{block}": value for block, value in fractions.items()},
            "images": {"routing/heatmap": heatmap_png_bytes(statistics)},
            "logs": {f"routing_{block}": value for block, value in fractions.items()},
        }
