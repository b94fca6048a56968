"""A Keras callback base: measure something about the model every epoch, log it to TensorBoard and to the epoch logs."""

import keras


class EpochMonitor(keras.callbacks.Callback):
    """Every epoch, `measure()` returns what to log; this writes it to TensorBoard in `log_dir` and the epoch logs.

    `measure()` returns None (nothing to log this epoch) or a dict with any of:
    - "scalars": {tag: value}, TensorBoard scalars at step = epoch;
    - "images": {tag: PNG bytes}, TensorBoard images;
    - "logs": {key: value}, added to the epoch logs (so they reach history.csv and metrics.json's history).

    Args:
        log_dir: TensorBoard directory of this monitor's writer (created on the first epoch).
    """

    def __init__(self, log_dir):
        super().__init__()
        self.log_dir = log_dir
        self._writer = None

    def measure(self):
        raise NotImplementedError

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf

        report = self.measure()
        if report is None:
            return
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        with self._writer.as_default(step=epoch):
            for tag, value in report.get("scalars", {}).items():
                tf.summary.scalar(tag, value)
            for tag, png in report.get("images", {}).items():
                tf.summary.image(tag, tf.expand_dims(tf.io.decode_png(png, channels=4), 0))
        self._writer.flush()
        if logs is not None:
            logs.update(report.get("logs", {}))

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
