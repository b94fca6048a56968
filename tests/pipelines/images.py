"""Small image files for the pipeline tests, including the untidy kinds real folders hold."""

import pathlib

import numpy as np
from PIL import Image

RED, GREEN, BLUE = (230, 20, 20), (20, 200, 20), (20, 20, 230)


def solid(path, colour=RED, size=(40, 30), fmt=None, mode="RGB", **save_kwargs):
    """Writes a one-colour image (`size` is (width, height)); returns the path."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", size, colour)
    if mode != "RGB":
        image = image.convert(mode)
    image.save(path, format=fmt, **save_kwargs)
    return path


def noise(path, seed=0, size=(48, 36), fmt=None):
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(array).save(path, format=fmt)
    return path


def truncated_jpeg(path):
    path = noise(path, seed=7, size=(64, 64), fmt="JPEG")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def text_as_jpeg(path):
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("this is not an image\n")
    return path


def animated_gif(path, colours=(RED, BLUE, GREEN)):
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = [Image.new("RGB", (32, 32), colour) for colour in colours]
    frames[0].save(path, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    return path


def grey16_png(path, value=40000, size=(30, 30)):
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0]), value, dtype=np.uint16)).save(path, format="PNG")
    return path


def make_class_folders(root, counts, colours=None, size=(40, 30)):
    """`root/<class>/<class>_<i>.png` solid images; `counts` {class: n}; returns {class: [paths]}."""
    colours = colours or {}
    out = {}
    for index, (name, count) in enumerate(sorted(counts.items())):
        colour = colours.get(name, (10 * index, 100, 255 - 10 * index))
        out[name] = [solid(pathlib.Path(root) / name / f"{name}_{i:03d}.png", colour, size) for i in range(count)]
    return out
