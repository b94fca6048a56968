"""ImageNet class names and the online path for keras.applications weights.

Offline (these machines, or a user behind a firewall) Keras' own download retries for minutes, so
`imagenet_download` first checks in a fraction of a second that the weights host answers, and
otherwise fails at once with the one-line message that says where to put the file.
"""

import socket
from pathlib import Path

from models.errors import ModelConfigError

WEIGHTS_HOST = "storage.googleapis.com"
ORIGINS = {
    "MobileNetV2": "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/",
    "MobileNet": "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet/",
    "ResNet50": "https://storage.googleapis.com/tensorflow/keras-applications/resnet/",
}
LABEL_FILES = ("imagenet_labels.txt",)
NUM_CLASSES = 1000


def host_reachable(host=WEIGHTS_HOST, port=443, timeout=3.0):
    """True when a TCP connection to `host` opens within `timeout` seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def imagenet_download(filename, application, backbone_name, not_found_message):
    """Downloads the official `filename` into the Keras cache (~/.keras/models) and returns its path.

    Raises:
        ModelConfigError: `not_found_message` plus "(offline: no download)" when the host does not answer.
    """
    if not host_reachable():
        raise ModelConfigError(f"{not_found_message} (offline: {WEIGHTS_HOST} unreachable, no download attempted)")
    import keras

    try:
        return keras.utils.get_file(filename, ORIGINS[application] + filename, cache_subdir="models")
    except Exception as error:  # network errors of every kind become one line
        raise ModelConfigError(f"download of {filename} for {backbone_name} failed ({error}); {not_found_message}") from None


def imagenet_class_names(weights_path):
    """The 1000 ImageNet class names in Keras' numbering, or "class_<i>" when no label file is at hand.

    Looks for `imagenet_labels.txt` beside the weights file (one name a line; a first line
    "background", as in the TFLite models' label files, is dropped).
    """
    if weights_path is not None:
        for name in LABEL_FILES:
            candidate = Path(weights_path).parent / name
            if candidate.is_file():
                lines = [line.strip() for line in candidate.read_text(encoding="utf-8").splitlines() if line.strip()]
                if len(lines) == NUM_CLASSES + 1:
                    lines = lines[1:]
                if len(lines) == NUM_CLASSES:
                    return lines
    return [f"class_{i}" for i in range(NUM_CLASSES)]
