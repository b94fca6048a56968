"""Small models and synthetic run directories for the export tests (no training needed)."""

import json
import os

import keras
import numpy as np

from models.backbones import build_backbone
from models.classifier import assemble_classifier
from models.spottune.classifier import build_spottune_classifier, routed_blocks
from models.spottune.compact import compact_classifier
from rundir.config import TrainConfig

CLOTHING_CLASSES = ["dress", "hat", "longsleeve", "outwear", "pants", "shirt", "shoes", "shorts", "skirt", "t-shirt"]
TINY_POLICY = (4, 8, 8)
LAST_3 = [0, 0, 0, 0, 0, 0, 1, 1, 1]


def uint8_images(count, size, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, 3)).astype(np.uint8)


def varied_images(count, size, seed=0):
    """uint8 images of different brightness, colour and contrast (noise images all look alike to a network)."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 255, (count, 1, 1, 3))
    contrast = rng.uniform(5, 120, (count, 1, 1, 1))
    images = base + contrast * rng.standard_normal((count, size, size, 3))
    return np.clip(images, 0, 255).astype(np.uint8)


def keras_logits(model, images):
    return keras.ops.convert_to_numpy(model(images.astype(np.float32), training=False))


def assert_close(actual, expected, tolerance=1e-4):
    """|actual - expected| <= tolerance, relative to the logit scale when the logits are larger than 1.

    Randomly initialised backbones give logits in the hundreds; float32 kernels that sum in another
    order then differ by ~1e-6 of that scale.
    """
    scale = max(1.0, float(np.max(np.abs(expected))))
    difference = float(np.max(np.abs(np.asarray(actual) - np.asarray(expected))))
    assert difference <= tolerance * scale, f"max |difference| {difference:.3g} > {tolerance} * {scale:.3g}"


def perturb(layer, seed=0, scale=0.05):
    rng = np.random.default_rng(seed)
    for variable in layer.trainable_weights:
        variable.assign(variable + rng.normal(scale=scale, size=variable.shape).astype("float32"))


def routed_resnet20(policy="fixed", decisions=None, num_classes=10, weights="default", seed=0):
    """A SpotTune ResNet-20 whose fine-tuned copies differ from the pretrained ones (small policy network)."""
    keras.utils.set_random_seed(seed)
    kwargs = {"decisions": decisions or LAST_3} if policy == "fixed" else {"policy_widths": TINY_POLICY}
    model = build_spottune_classifier(build_backbone("resnet20", weights=weights), num_classes, policy=policy, seed=0, **kwargs)
    for index, block in enumerate(routed_blocks(model)):
        perturb(block.finetuned, seed=seed + index)
    return model


def mixed_policy(model, images, seed=0, scale=2.0):
    """Makes a per-image policy's decisions depend strongly on the image, so images take different paths."""
    from models.spottune.classifier import routing_model

    dense = model.get_layer("policy").dense
    rng = np.random.default_rng(seed)
    dense.kernel.assign(rng.normal(scale=scale, size=dense.kernel.shape).astype("float32"))
    dense.bias.assign(np.zeros(dense.bias.shape, "float32"))
    decisions = keras.ops.convert_to_numpy(routing_model(model)(images.astype(np.float32), training=False)["decisions"])
    return decisions


def global_k_models(seed=0):
    """(routed fixed-decision model, its compact classifier, decisions) on pretrained ResNet-20, stem trained too."""
    routed = routed_resnet20("fixed", LAST_3, seed=seed)
    perturb(routed.get_layer("stem"), seed=seed + 100, scale=0.01)
    compact = compact_classifier(routed)
    return routed, compact, LAST_3


def write_run(directory, model, strategy, image_size=16, compact=None, dataset=None, data_dir=None, class_names=None,
              backbone="resnet20", weights="default", routing=None, k=None):
    """A finished run directory as python -m app.train leaves it (config, dataset, metrics, model files)."""
    os.makedirs(directory, exist_ok=True)
    config = TrainConfig(dataset=dataset, data_dir=data_dir, backbone=backbone, weights=weights, strategy=strategy,
                         k=k, epochs=1, image_size=image_size, out=str(directory))
    config.save(os.path.join(directory, "config.json"))
    class_names = class_names or CLOTHING_CLASSES
    with open(os.path.join(directory, "dataset.json"), "w") as f:
        json.dump({"name": dataset or "clothing-mini", "class_names": class_names, "image_size": image_size,
                   "normalization": "source", "split_sizes": {}}, f)
    metrics = {"accuracy": {}, "epochs": 1}
    if routing is not None:
        metrics["routing"] = routing
    with open(os.path.join(directory, "metrics.json"), "w") as f:
        json.dump(metrics, f)
    if model is not None:
        model.save(os.path.join(directory, "model.keras"))
    if compact is not None:
        compact.save(os.path.join(directory, "compact.keras"))
    return str(directory)


def plain_resnet20(num_classes=10, weights="default"):
    return assemble_classifier(build_backbone("resnet20", weights=weights), num_classes)
