"""FitNets as a fine-tuning baseline (Romero et al., ICLR 2015): the student's feature map at one
stage is regressed, through a learned 1x1 convolution, onto the frozen pretrained teacher's.

- `hint_term.py`: the hint loss, a `TrainingTerm` owning the teacher copy and the regressor.
- `strategy.py`: `--strategy fitnets` and its flags.

Method page: docs/methods/fitnets.md.
"""
