"""The (source stage, target stage) pairs whose features L2T-ww matches.

Stages are numbered as the features of `models.teacher.stages`: 0 the stem, k >= 1 stage k. The
authors match every pair of stages 1..4 of their ResNets (16 pairs, `--pairs 4-4,4-3,...,1-1`),
never the stem.
"""

from models.errors import ModelConfigError


def all_pairs(source_stages, target_stages):
    """Every (m, n), m in 1..source_stages, n in 1..target_stages (the authors' default)."""
    return [(m, n) for m in range(1, source_stages + 1) for n in range(1, target_stages + 1)]


def parse_pairs(text, source_stages, target_stages):
    """'all' (or None) -> `all_pairs`; 'same' -> (k, k) for the stages both have; 'M-N,M-N' -> those.

    Raises:
        ModelConfigError: a malformed pair or a stage out of range (one line).
    """
    if text in (None, "", "all"):
        return all_pairs(source_stages, target_stages)
    if text == "same":
        return [(k, k) for k in range(1, min(source_stages, target_stages) + 1)]
    pairs = []
    for item in str(text).split(","):
        source, sep, target = item.strip().partition("-")
        if not sep or not source.isdigit() or not target.isdigit():
            raise ModelConfigError(f"--l2t-pairs takes all, same or M-N,M-N (source-target stages), got {item!r}")
        m, n = int(source), int(target)
        if not (0 <= m <= source_stages and 0 <= n <= target_stages):
            raise ModelConfigError(
                f"--l2t-pairs {item}: the source has stages 0..{source_stages}, the target 0..{target_stages}"
            )
        pairs.append((m, n))
    return list(dict.fromkeys(pairs))


def pairs_text(pairs):
    """'M-N,M-N': the flag's syntax, for configs."""
    return ",".join(f"{m}-{n}" for m, n in pairs)
