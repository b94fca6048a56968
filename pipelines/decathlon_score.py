"""The Visual Decathlon score (Rebuffi, Bilen, Vedaldi, NeurIPS 2017).

    S = sum_d alpha_d * max(0, Emax_d - E_d)^2,   alpha_d = 1000 / Emax_d^2,   Emax_d = 2 * E_d^baseline

with E_d the error of a method on task d (a fraction) and E_d^baseline the error of the challenge's
baseline (a network fine-tuned per task). A method as good as the baseline on a task scores
1000 / 4 = 250 there, a perfect one 1000, one at twice the baseline error or worse 0; ten tasks at
the baseline's level make 2500. Test labels of the Decathlon are hidden (TFDS stores -1), so
adaptune scores the validation split and says so.
"""

# Baseline accuracies (%) of the challenge, the reference of every task's Emax.
BASELINE_ACCURACY = {
    "imagenet12": 59.87,
    "aircraft": 60.34,
    "cifar100": 82.12,
    "daimlerpedcls": 92.82,
    "dtd": 55.53,
    "gtsrb": 97.53,
    "vgg-flowers": 81.41,
    "omniglot": 87.69,
    "svhn": 96.55,
    "ucf101": 51.20,
}
MAX_TASK_SCORE = 1000.0


def task_score(task, accuracy_percent):
    """One task's share of the score for a top-1 accuracy in percent."""
    if task not in BASELINE_ACCURACY:
        raise ValueError(f"unknown Decathlon task {task!r}; known: {', '.join(sorted(BASELINE_ACCURACY))}")
    if not 0.0 <= accuracy_percent <= 100.0:
        raise ValueError(f"accuracy of {task} must be a percentage in [0, 100], got {accuracy_percent}")
    error = 1.0 - accuracy_percent / 100.0
    max_error = 2.0 * (1.0 - BASELINE_ACCURACY[task] / 100.0)
    alpha = MAX_TASK_SCORE / max_error**2
    return alpha * max(0.0, max_error - error) ** 2


def decathlon_score(accuracies_percent):
    """The score of a method: the sum of `task_score` over the tasks given ({task: accuracy %})."""
    return sum(task_score(task, accuracy) for task, accuracy in accuracies_percent.items())
