"""A Keras callback that logs, every epoch, where a SpotTune policy sends each block."""

import keras


class RoutingMonitor(keras.callbacks.Callback):
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
        super().__init__()
        self.network = network
        self.dataset = dataset
        self.class_names = list(class_names)
        self.log_dir = log_dir
        self.max_batches = max_batches
        self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf

        from models.spottune.routing_statistics import heatmap_png_bytes, routing_statistics

        statistics = routing_statistics(self.network, self.dataset, self.class_names, self.max_batches)
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        with self._writer.as_default(step=epoch):
            for index, value in enumerate(statistics["fraction_finetuned"]):
                tf.summary.scalar(f"routing/block_{index + 1:02d}", value)
                if logs is not None:
                    logs[f"routing_block_{index + 1:02d}"] = value
            png = heatmap_png_bytes(statistics)
            tf.summary.image("routing/heatmap", tf.expand_dims(tf.io.decode_png(png, channels=4), 0))
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
