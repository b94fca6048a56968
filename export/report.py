"""The export report: a table for the terminal and export_report.json beside the files."""

import json
import os

from export.host import describe
from rundir.layout import replacing

REPORT_FILE = "export_report.json"

COLUMNS = (
    ("file", "file", "{}"),
    ("status", "status", "{}"),
    ("size_bytes", "size", None),
    ("accuracy", "acc", "{:.4f}"),
    ("agreement", "agree", "{:.4f}"),
    ("agreement_interval", "95% interval", "{:.3f}-{:.3f}"),
    ("max_abs_diff", "max|diff|", "{:.2e}"),
    ("latency_ms", "ms/img", "{:.3f}"),
)
ROUTED_COLUMNS = (
    ("routing", "routing", "{}"),
    ("plain_latency_ms", "plain ms", "{:.3f}"),
    ("latency_ratio", "vs plain", "{:.2f}x"),
)


def human_size(size):
    if size is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024.0


def _cell(row, key, fmt):
    value = row.get(key)
    if value is None:
        return "-"
    if key == "size_bytes":
        return human_size(value)
    if isinstance(value, (list, tuple)):
        return fmt.format(*value)
    return fmt.format(value)


def table(rows, columns):
    """Rows of dicts as a fixed-width text table (list of lines)."""
    header = [title for _, title, _ in columns]
    body = [[_cell(row, key, fmt) for key, _, fmt in columns] for row in rows]
    widths = [max(len(cell) for cell in column) for column in zip(header, *body)]
    lines = ["  ".join(cell.ljust(width) if i == 0 else cell.rjust(width) for i, (cell, width) in enumerate(zip(line, widths))) for line in [header, *body]]
    return [lines[0], "  ".join("-" * width for width in widths), *lines[1:]]


def format_report(report):
    """The human-readable report: what was exported, the input it takes, one row per file, notes."""
    lines = [
        f"export of {report['run']} ({report['strategy']}, {report['backbone']})",
        f"  exported network: {report['exported']['kind']}: {report['exported']['origin']}",
        *([f"  note: {report['exported']['note']}"] if report["exported"].get("note") else []),
        f"  input:  {report['input']}",
        f"  output: {report['output']}",
        f"  verification: {report['verification']['images']} {report['verification']['split']} images, one at a time; "
        f"Keras accuracy on them {report['verification']['keras_accuracy']:.4f}; "
        f"agreement threshold {report['thresholds']['float']} (float32/float16), {report['thresholds']['quantized']} (dynamic/int8), "
        "judged on the agreement measured; 95% interval: Wilson score",
    ]
    if report.get("host"):
        lines.append(f"  verified on: {describe(report['host'])}; quantised agreement depends on the CPU's kernels")
    lines += [
        "",
    ]
    files = report["files"]
    columns = COLUMNS + (ROUTED_COLUMNS if any(row.get("routing") for row in files) else ())
    if files:
        lines += ["  " + line for line in table(files, columns)]
    notes = [f"{row['file']}: {row['note']}" for row in files if row.get("note")]
    if any(row.get("both_latency_ms") for row in files):
        notes += [
            f"{row['file']}: both copies computed: {row['both_latency_ms']:.3f} ms/img"
            for row in files
            if row.get("both_latency_ms")
        ]
    if notes:
        lines += ["", "  notes:"] + [f"    {note}" for note in notes]
    delta = report.get("delta")
    if delta:
        lines += [
            "",
            f"  task delta {delta['file']}: {human_size(delta['size_bytes'])} "
            f"({100 * delta['fraction_of_full']:.1f}% of the full model's {human_size(delta['full_weight_bytes'])} of float32 weights; "
            f"compact.keras {human_size(delta.get('full_keras_bytes'))}); parts: {', '.join(delta['parts'])}",
            f"    rebuilt here from the pretrained backbone + delta: max |logit difference| {delta['rebuilt_max_abs_diff']:.2g} "
            f"against the exported model",
            f"    rebuild: {delta['rebuild_command']}",
        ]
    return "\n".join(lines)


def write_report(directory, report):
    path = os.path.join(directory, REPORT_FILE)
    os.makedirs(directory, exist_ok=True)
    with replacing(path) as tmp, open(tmp, "w") as f:
        json.dump(report, f, indent=2, sort_keys=True)
    return path


DELTA_TOLERANCE = 1e-5


def problems(report):
    """One line per file that was rejected or failed (and for a delta that does not rebuild the model)."""
    lines = [f"{row['file']}: {row['note']}" for row in report["files"] if row["status"] in ("rejected", "failed")]
    delta = report.get("delta")
    if delta and delta["rebuilt_max_abs_diff"] > DELTA_TOLERANCE:
        lines.append(f"{delta['file']}: the model rebuilt from it differs from the exported one by {delta['rebuilt_max_abs_diff']:.3g}")
    return lines
