"""A Keras callback that logs AdaFilter's filter usage every epoch to TensorBoard."""

import keras


class FilterUsageMonitor(keras.callbacks.Callback):
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
        super().__init__()
        self.network = network
        self.dataset = dataset
        self.class_names = list(class_names)
        self.log_dir = log_dir
        self.max_batches = max_batches
        self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf

        from models.adafilter.filter_usage import filter_usage

        statistics = filter_usage(self.network, self.dataset, self.class_names, self.max_batches)
        if not statistics["images"]:
            return
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        with self._writer.as_default(step=epoch):
            tf.summary.scalar("adafilter/overall", statistics["overall"])
            for index, value in enumerate(statistics["per_layer"]):
                tf.summary.scalar(f"adafilter/layer_{index + 1:03d}", value)
        self._writer.flush()
        if logs is not None:
            logs["adafilter_usage"] = statistics["overall"]

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
