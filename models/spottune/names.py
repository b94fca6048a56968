"""SpotTune's names and choices, without Keras: the command line declares its flags from them
before TensorFlow is imported (`python -m app.train --help` stays fast)."""

POLICY_NAME = "policy"
GATE_NAME = "gate"
GLOBAL_K_NAME = "global_k"
INFERENCE_MODES = ("deterministic", "sample")  # routing at evaluation (models.spottune.gumbel_softmax)
FROZEN_BN_MODES = ("frozen", "train", "train_affine")  # BatchNorm of the frozen copies (models.spottune.routed_block)
SCHEDULES = ("constant", "exponential")  # temperature schedules (models.spottune.temperature_schedule)
PER_IMAGE_POLICIES = ("per_image", "stem_features")  # --policy of strategy spottune (models.spottune.classifier)
BLOCK_CHOICES = ("penalty", "top_k")  # global-k: how the k blocks are chosen (models.spottune.strategies)
