"""Keras callbacks used by `app.train`: throughput measurement and learning-rate logging."""

import time

import keras


class ThroughputMeter(keras.callbacks.Callback):
    """Measures training images per second, epoch by epoch, excluding validation time.

    The first epoch includes graph tracing, so `images_per_second` reports the median over the
    epochs after the first when there are any.

    Args:
        images_per_epoch: number of training images seen in one epoch.
    """

    def __init__(self, images_per_epoch):
        super().__init__()
        self.images_per_epoch = int(images_per_epoch)
        self.epoch_rates = []
        self._start = None
        self._train_seconds = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        self._train_seconds = None

    def on_test_begin(self, logs=None):
        if self._start is not None and self._train_seconds is None:
            self._train_seconds = time.perf_counter() - self._start

    def on_epoch_end(self, epoch, logs=None):
        seconds = self._train_seconds if self._train_seconds is not None else time.perf_counter() - self._start
        self.epoch_rates.append(self.images_per_epoch / max(seconds, 1e-9))
        if logs is not None:
            logs["images_per_second"] = self.epoch_rates[-1]

    @property
    def images_per_second(self):
        rates = self.epoch_rates[1:] or self.epoch_rates
        if not rates:
            return None
        ordered = sorted(rates)
        return ordered[len(ordered) // 2]


class LearningRateLogger(keras.callbacks.Callback):
    """Adds the optimiser's current learning rate to the epoch logs (so TensorBoard plots it)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        optimizer = self.model.optimizer
        rate = optimizer.learning_rate
        if callable(rate):
            rate = rate(optimizer.iterations)
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(rate))


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

        from app.routing_report import heatmap_png_bytes, routing_statistics

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
