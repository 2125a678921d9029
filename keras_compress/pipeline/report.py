"""The report of a `compress()` run: a table per stage, plots, files."""

import dataclasses
import html
import json
import os

from keras_compress.analysis import sensitivity
from keras_compress.convert import _files


def describe_drop(drop):
    """A drop in words: `"drops 0.0055"`, or `"gains 0.0010"` if negative.

    The one wording of the reports, the demo and `compress()`'s messages.

    Args:
        drop: Reference accuracy minus the variant's accuracy.

    Returns:
        A phrase for a sentence about the variant.
    """
    return f"drops {drop:.4f}" if drop >= 0 else f"gains {-drop:.4f}"


# budget -> (words, format of its values)
_BUDGETS = {
    "accuracy_drop": ("accuracy drop", "{:.4f}"),
    "bytes": ("bytes", "{:,.0f}"),
    "latency_us": ("latency µs", "{:,.1f}"),
}


def budget_name(name):
    """`"latency_us"` -> `"latency µs"`: a budget key in words."""
    return _BUDGETS[name][0]


def describe_check(name, check):
    """One budget of a file in words.

    E.g. `"accuracy drops 0.0010 (allowed 0.0100)"`, `"61,192 bytes
    (allowed 108,519)"`, `"70.2 µs (allowed 66.0: FAILED)"`.

    Args:
        name: `"accuracy_drop"`, `"bytes"` or `"latency_us"`.
        check: `{"value", "limit", "held"}` (`Budgets.check`).
    """
    fmt = _BUDGETS[name][1]
    limit = fmt.format(check["limit"]) + ("" if check["held"] else ": FAILED")
    if name == "accuracy_drop":
        return f"accuracy {describe_drop(check['value'])} (allowed {limit})"
    unit = "bytes" if name == "bytes" else "µs"
    return f"{fmt.format(check['value'])} {unit} (allowed {limit})"


@dataclasses.dataclass(frozen=True)
class StageResult:
    """Figures of one model and its converted file.

    Attributes:
        stage: What was done, e.g. `"original"` or `"prune(...)"`.
        attempt: Which try of the pipeline (0 for the original).
        target: The file's target, e.g. `"tflite-int8"`.
        keras_accuracy: Accuracy of the Keras model on the validation data.
        file_accuracy: Accuracy of the converted file on the same data.
        accuracy_drop: Original file accuracy minus this file's accuracy.
        bytes: File size.
        gzip_bytes: File size after gzip -9.
        latency_us: Median single-sample latency of the file (µs).
        params: Trainable parameters of the Keras model.
        sparsity: Fraction of the model's weights that are exactly zero.
        seconds: Wall time of the step (training and conversion).
    """

    stage: str
    attempt: int
    target: str
    keras_accuracy: float
    file_accuracy: float
    accuracy_drop: float
    bytes: int
    gzip_bytes: int
    latency_us: float
    params: int
    sparsity: float
    seconds: float


_COLUMNS = (
    # (attribute, header, format)
    ("attempt", "try", "{}"),
    ("stage", "stage", "{}"),
    ("target", "target", "{}"),
    ("keras_accuracy", "keras acc", "{:.4f}"),
    ("file_accuracy", "file acc", "{:.4f}"),
    ("accuracy_drop", "drop", "{:+.4f}"),
    ("bytes", "bytes", "{:,}"),
    ("gzip_bytes", "gzip bytes", "{:,}"),
    ("gzip_ratio", "gzip x", "{:.3f}"),
    ("latency_us", "latency us", "{:.1f}"),
    ("params", "params", "{:,}"),
    ("sparsity", "sparsity", "{:.1%}"),
    ("seconds", "seconds", "{:.0f}"),
)


@dataclasses.dataclass(frozen=True)
class CompressionReport:
    """What `compress()` did and measured.

    Attributes:
        target: The deployment target.
        max_accuracy_drop: The budget.
        original: `StageResult` of the original model as a float32 file
            (the reference for accuracy and sizes).
        stages: `StageResult` of every step of every attempt, in order.
        chosen: Index in `stages` of the delivered file.
        budget_met: Whether the delivered file is within the budget.
        message: One sentence saying what happened.
        wall_time_s: Wall time of the whole run.
        recipes: The recipe config of each attempt.
        sensitivity: The `SensitivityReport` of the sparsity scan, or
            `None`.
        budgets: The budgets as given (`Budgets.as_dict()`).
        budget_checks: `{budget: {"value", "limit", "held"}}` of the
            delivered file (limits absolute: bytes, µs).
        search: The budget search's `SearchResult.as_dict()` (plans,
            measured candidates, notes, seconds), or `None`.
        search_scans: The search's channel and precision
            `SensitivityReport`s.
        distillation: `Distiller.recipe` of the fine-tuning (which loss,
            weights and feature hint ran), or `None` when no step was
            fine-tuned with distillation in this call.
    """

    target: str
    max_accuracy_drop: float
    original: StageResult
    stages: tuple
    chosen: int
    budget_met: bool
    message: str
    wall_time_s: float
    recipes: tuple
    sensitivity: object = None
    budgets: dict = None
    budget_checks: dict = None
    search: dict = None
    search_scans: tuple = ()
    distillation: dict = None

    @property
    def final(self):
        return self.stages[self.chosen]

    def _rows(self):
        rows = []
        for index, stage in enumerate((self.original, *self.stages)):
            row = dataclasses.asdict(stage)
            row["gzip_ratio"] = stage.gzip_bytes / self.original.gzip_bytes
            row["chosen"] = index - 1 == self.chosen
            rows.append(row)
        return rows

    def as_dict(self):
        return {
            "target": self.target,
            "max_accuracy_drop": self.max_accuracy_drop,
            "budget_met": self.budget_met,
            "message": self.message,
            "wall_time_s": self.wall_time_s,
            "recipes": list(self.recipes),
            "stages": self._rows(),
            "sensitivity": (
                self.sensitivity.as_dict() if self.sensitivity else None
            ),
            "budgets": self.budgets,
            "budget_checks": self.budget_checks,
            "search": self.search,
            "search_scans": [scan.as_dict() for scan in self.search_scans],
            "distillation": self.distillation,
        }

    def _cells(self):
        for row in self._rows():
            cells = [fmt.format(row[key]) for key, _, fmt in _COLUMNS]
            yield row, cells

    def _summary(self):
        final = self.final
        return (
            f"{self.message} Delivered file: {final.stage} (try "
            f"{final.attempt}), accuracy {final.file_accuracy:.4f} vs "
            f"{self.original.file_accuracy:.4f} original "
            f"(drop {final.accuracy_drop:+.4f}, budget "
            f"{self.max_accuracy_drop:.4f}), {final.bytes:,} bytes "
            f"({final.bytes / self.original.bytes:.3f}x the float32 file, "
            f"gzip {final.gzip_bytes / self.original.gzip_bytes:.3f}x)"
            + (
                f", {final.latency_us:.1f} µs "
                f"({final.latency_us / self.original.latency_us:.3f}x)"
                if self.original.latency_us
                else ""
            )
            + f"; {self.wall_time_s:.0f} s in all."
        )

    def _budget_lines(self):
        """Markdown lines: each budget, its limit and whether it held."""
        if not self.budget_checks:
            return []
        lines = ["## Budgets (delivered file)", ""]
        lines += ["| budget | limit | delivered | held |", "|---|---|---|---|"]
        for name, check in self.budget_checks.items():
            words, fmt = _BUDGETS[name]
            lines.append(
                f"| {words} | {fmt.format(check['limit'])} | "
                f"{fmt.format(check['value'])} | "
                f"{'yes' if check['held'] else 'NO'} |"
            )
        return lines + [""]

    def _search_lines(self):
        """Markdown lines: where the search's time went and what it built."""
        if not self.search:
            return []
        seconds = self.search["seconds"]
        lines = [
            "## Budget search",
            "",
            f"Scans {seconds['scans']:.0f} s, search {seconds['search']:.0f} s "
            f"({len(self.search['candidates'])} untrained candidate files "
            "measured). Fine-tuned plans: "
            f"{'; '.join(_plan_words(p) for p in self.search['plans'])}.",
        ]
        lines += [f"- {note}" for note in self.search["notes"]]
        lines += [
            "",
            "| candidate (untrained) | predicted drop | bytes | latency us |",
            "|---|---|---|---|",
        ]
        for row in self.search["candidates"]:
            lines.append(
                f"| {_plan_words(row['plan'])} | {row['predicted_drop']:.4f} | "
                f"{row['bytes']:,} | {row['latency_us']:.1f} |"
            )
        table = self.search.get("layer_latency_us")
        if table:
            lines += [
                "",
                "Each layer's latency, its operators timed alone in an "
                "untrained file (the latency predictions use it):",
                "",
                "| layer | 8-bit us | 4-bit us | 4-bit / 8-bit |",
                "|---|---|---|---|",
            ]
            for layer, base in table["base"].items():
                low = table["low"].get(layer)
                ratio = f"{low / base:.2f}" if low and base else "-"
                low_text = f"{low:.1f}" if low is not None else "-"
                lines.append(f"| {layer} | {base:.1f} | {low_text} | {ratio} |")
            lines.append(
                f"| (operators of no layer) | {table['other']:.1f} | | |"
            )
        for scan in self.search_scans:
            lines += ["", "```", str(scan), "```"]
        return lines + [""]

    def to_markdown(self):
        """The report as Markdown: a summary line and one table."""
        lines = [
            f"# Compression report ({self.target})",
            "",
            self._summary(),
            "",
            "| " + " | ".join(h for _, h, _ in _COLUMNS) + " |",
            "|" + "---|" * len(_COLUMNS),
        ]
        for row, cells in self._cells():
            if row["chosen"]:
                cells = [f"**{c}**" for c in cells]
            lines.append("| " + " | ".join(cells) + " |")
        lines += [
            "",
            "drop: original file accuracy minus this file's; gzip x: "
            "against the original float32 file. The delivered row is bold.",
            "",
        ]
        lines += self._budget_lines()
        lines += self._search_lines()
        if self.distillation:
            lines += [
                "",
                f"Distillation: {describe_distillation(self.distillation)}.",
            ]
        if self.sensitivity is not None:
            lines += ["", "```", str(self.sensitivity), "```"]
        return "\n".join(lines) + "\n"

    def to_html(self, images=()):
        """The report as a standalone HTML page.

        Args:
            images: File names of plots (next to the page) to show.
        """
        head = "".join(f"<th>{html.escape(h)}</th>" for _, h, _ in _COLUMNS)
        body = []
        for row, cells in self._cells():
            style = ' style="font-weight:bold"' if row["chosen"] else ""
            tds = "".join(f"<td>{html.escape(c)}</td>" for c in cells)
            body.append(f"<tr{style}>{tds}</tr>")
        plots = "".join(
            f'<p><img src="{html.escape(name)}" alt="{html.escape(name)}"></p>'
            for name in images
        )
        return (
            "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
            f"<title>Compression report ({html.escape(self.target)})</title>"
            "<style>table{border-collapse:collapse}td,th{border:1px solid "
            "#999;padding:2px 6px;text-align:right}</style></head><body>"
            f"<h1>Compression report ({html.escape(self.target)})</h1>"
            f"<p>{html.escape(self._summary())}</p>"
            f"<table><tr>{head}</tr>{''.join(body)}</table>{plots}"
            "</body></html>\n"
        )

    def write(self, folder):
        """Writes report.md, report.html, report.json and plots to `folder`.

        Plots (PNG) need matplotlib (`pip install keras-compress[report]`);
        without it the report has no images.

        Returns:
            A dict `{kind: path}` of the files written.
        """
        os.makedirs(folder, exist_ok=True)
        paths = {}
        images = []
        try:
            images = _plots(self, folder)
        except ImportError:
            pass
        for name in images:
            paths[name] = os.path.join(folder, name)
        texts = {
            "report.md": self.to_markdown(),
            "report.html": self.to_html(images),
            "report.json": json.dumps(self.as_dict(), indent=2) + "\n",
        }
        for name, text in texts.items():
            path = os.path.join(folder, name)
            _files.write_atomically(path, text.encode("utf-8"))
            paths[name] = path
        return paths


def _plots(report, folder):
    """Draws the plots; returns their file names. Needs matplotlib."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    def save(figure, name):
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
        pyplot.close(figure)
        _files.write_atomically(os.path.join(folder, name), buffer.getvalue())
        return name

    names = []
    figure, axes = pyplot.subplots(figsize=(6, 4))
    rows = report._rows()
    for row in rows:
        axes.scatter(row["gzip_bytes"] / 1024, row["file_accuracy"])
        axes.annotate(
            f"{row['attempt']}: {row['stage'].split('(')[0]}",
            (row["gzip_bytes"] / 1024, row["file_accuracy"]),
            fontsize=7,
        )
    budget = report.original.file_accuracy - report.max_accuracy_drop
    axes.axhline(budget, linestyle="--", color="gray", label="budget")
    axes.set_xlabel("gzip KiB")
    axes.set_ylabel("file accuracy")
    axes.set_title("Size and accuracy per stage")
    axes.legend()
    names.append(save(figure, "stages.png"))

    figure, (by_bytes, by_latency) = pyplot.subplots(1, 2, figsize=(10, 4))
    for row in rows:
        marker = "*" if row["chosen"] else "o"
        size = 140 if row["chosen"] else 30
        by_bytes.scatter(
            row["bytes"] / 1024, row["file_accuracy"], marker=marker, s=size
        )
        by_latency.scatter(
            row["latency_us"], row["file_accuracy"], marker=marker, s=size
        )
        label = f"{row['attempt']}: {row['stage'].split('(')[0]}"
        by_bytes.annotate(
            label, (row["bytes"] / 1024, row["file_accuracy"]), fontsize=7
        )
        by_latency.annotate(
            label, (row["latency_us"], row["file_accuracy"]), fontsize=7
        )
    checks = report.budget_checks or {}
    for axes, key, scale in (
        (by_bytes, "bytes", 1 / 1024),
        (by_latency, "latency_us", 1.0),
    ):
        axes.axhline(budget, linestyle="--", color="gray")
        if key in checks:
            axes.axvline(
                checks[key]["limit"] * scale,
                linestyle=":",
                color="red",
                label="budget",
            )
            axes.legend()
        axes.set_ylabel("file accuracy")
    by_bytes.set_xlabel("file KiB (raw)")
    by_latency.set_xlabel("latency µs (1 thread)")
    figure.suptitle(
        "Verified files: accuracy vs bytes and latency (delivered: star)"
    )
    names.append(save(figure, "frontier.png"))

    for scan in (report.sensitivity, *report.search_scans):
        if scan is None or not scan.layers:
            continue
        figure, axes = pyplot.subplots(figsize=(6, 4))
        start = 32 if scan.knob == "bits" else 0.0
        for layer in scan.layers:
            axes.plot(
                [start, *layer.values],
                [scan.baseline_accuracy, *layer.accuracies],
                marker="o",
                label=layer.layer,
            )
        axes.set_xlabel(sensitivity.KNOBS[scan.knob])
        axes.set_ylabel("accuracy (no fine-tuning)")
        axes.set_title(f"Sensitivity per layer: {scan.knob}")
        axes.legend(fontsize=7)
        suffix = "" if scan.knob == "sparsity" else f"_{scan.knob}"
        names.append(save(figure, f"sensitivity{suffix}.png"))
    return names


def _plan_words(plan):
    """A search plan (`Plan.as_dict()`) in words."""
    from keras_compress.pipeline import search

    return search.Plan.from_dict(plan).describe()


def describe_distillation(recipe):
    """One line for a `Distiller.recipe`: the loss, its weights and hints."""
    words = (
        f"{recipe['name']} recipe, {recipe['distillation_loss']} "
        f"(alpha {recipe['alpha']:g}, temperature {recipe['temperature']:g})"
    )
    if recipe["feature_distillations"]:
        words += ", hints " + "; ".join(recipe["feature_distillations"])
    if recipe.get("no_automatic_hint"):
        words += f" ({recipe['no_automatic_hint']})"
    return words
