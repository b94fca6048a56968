"""AdaFilter (Guo, Li, Wang, Rosing, AAAI 2020): per-image, per-filter choice between a frozen pretrained
convolution and its fine-tuned copy, made by one recurrent gate network shared by all gated layers.

Method page: docs/methods/adafilter.md.
"""
