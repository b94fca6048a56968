"""A Keras callback that logs AdaFilter's filter usage every epoch to TensorBoard."""

from models.epoch_monitor import EpochMonitor


class FilterUsageMonitor(EpochMonitor):
    """Scalars `adafilter/overall` and `adafilter/layer_NNN` (fraction of validation images x filters using
    the fine-tuned filter) in `<logs>/adafilter`, and `adafilter_usage` in the epoch logs (history.csv).

    Args:
        network: the AdaFilter classifier being trained.
        dataset: a finite dataset of (images, labels) to measure on.
        class_names: class names in label order.
        log_dir: TensorBoard directory.
        max_batches: cap on the batches measured per epoch.
    """

    def __init__(self, network, dataset, class_names, log_dir, max_batches=4):
        super().__init__(log_dir)
        self.network = network
        self.dataset = dataset
        self.class_names = list(class_names)
        self.max_batches = max_batches

    def measure(self):
        from models.adafilter.filter_usage import filter_usage

        statistics = filter_usage(self.network, self.dataset, self.class_names, self.max_batches)
        if not statistics["images"]:
            return None
        scalars = {"adafilter/overall": statistics["overall"]}
        scalars.update({f"adafilter/layer_{index + 1:03d}": value for index, value in enumerate(statistics["per_layer"])})
        return {"scalars": scalars, "logs": {"adafilter_usage": statistics["overall"]}}
