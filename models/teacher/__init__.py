"""What the teacher-student methods share: a frozen copy of the pretrained network and the stages
whose feature maps they compare (FitNets, L2T-ww, Hybrid Forward).

- `stages.py`: the stage ends of an assembled classifier (found by the resolution of its blocks).
- `frozen_teacher.py`: a frozen copy of a network's stem and blocks, returning stage features,
  always in inference mode.
"""
