"""Single image files as the evaluation pipeline sees them (for classifying a few photographs)."""

import numpy as np

from pipelines.scan import _to_rgb


def decode_file(path, size):
    """uint8 [size, size, 3]: any Pillow-readable file, as RGB, shorter side resized to `size`, centre crop.

    The same transform as evaluation in the "folder" policy (`pipelines.preprocessing`). Returns None
    when the file cannot be read as an image.
    """
    from PIL import Image, UnidentifiedImageError

    from pipelines.preprocessing import centre_crop, resize_shorter_side

    try:
        with Image.open(path) as image:
            image.seek(0)
            rgb = np.asarray(_to_rgb(image.convert("RGB") if image.mode == "P" else image), dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    return np.asarray(centre_crop(resize_shorter_side(rgb, int(size)), int(size)))
