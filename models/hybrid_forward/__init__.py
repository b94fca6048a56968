"""Hybrid Forward (Song et al., AAAI 2021), our reading: no code is public, and the paper's
abstract and a survey note are all the project had (METHODS.md section 6).

- `hybrid_paths.py`: the two forward paths that alternate stages between the student and the
  frozen teacher, ending in the student's head.
- `trainer.py`: the three cross-entropies per batch and the weight that balances them.
- `strategy.py`: `--strategy hybrid_forward`.

Method page: docs/methods/hybrid_forward.md.
"""
