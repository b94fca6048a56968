"""Networks and training maths: backbones, strategies, layers. Knows nothing of flags or datasets."""
