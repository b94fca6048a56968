"""Learning What and Where to Transfer (Jang et al., ICML 2019; authors' code alinlab/L2T-ww).

- `pairs.py`: the (source stage, target stage) pairs and their flag syntax.
- `weighted_matching.py`: the weighted feature-matching loss, a `TrainingTerm` owning the frozen
  source network, the 1x1 regressors and the "what" / "where" meta-networks.
- `lookahead.py`: the bilevel step's look-ahead as pure functions of the weights (a functional
  copy of Keras' SGD), and the meta-objective whose gradient trains the meta-networks.
- `trainer.py`: the `train_step`: real step, look-ahead, meta step; the network never leaves the
  state after the real step.
- `where_weights.py`: the learned "where" weights per pair, as a table, a heatmap and TensorBoard logs.
- `strategy.py`: `--strategy l2t_ww` and its flags.

Method page: docs/methods/l2t_ww.md.
"""
