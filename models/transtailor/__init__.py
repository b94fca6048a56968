"""TransTailor (Liu et al., AAAI 2021): prune the fine-tuned network towards the target task in rounds of
target-aware pruning and importance-aware fine-tuning.

Method page: docs/methods/transtailor.md.
"""
