"""Training metrics: `RUN_DIR/log.csv` (always) and TensorBoard (only if `tensorboard` is importable).

log.csv columns: step, loss, l1, balance, lr, seconds, val_psnr, pick_agree. loss/l1/balance are means over the
steps since the previous row (over all ranks), balance is the unweighted balance term (empty for models
without routing), lr the rate of the row's last step, seconds the training wall time so far (summed over
resumes), val_psnr the validation PSNR in dB when the row's step validated (else empty), pick_agree (MoEISR, at
validation steps) the share of training picks that equal the inference picks (`Validator.pick_agreement`).

Rows are appended and flushed one by one, so a `kill -9` loses at most a partial last line. On resume
the file is rewritten with only the complete rows up to the checkpoint's step, so a resumed run's log
has no duplicated or orphaned steps.
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path

from moeisr.io import atomic_write_text, user_error_for

COLUMNS = ("step", "loss", "l1", "balance", "lr", "seconds", "val_psnr", "pick_agree")


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.8g}"
    return str(value)


def _rows_up_to(path: Path, step: int) -> list[dict[str, str]]:
    """The complete rows of an existing log with step <= `step` (a truncated last line is dropped)."""
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8")
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]  # a line cut by a kill
    rows = []
    for row in csv.DictReader(io.StringIO(text)):
        try:
            if int(row["step"]) <= step:
                rows.append(row)
        except (KeyError, TypeError, ValueError):
            continue
    return rows


class MetricsLog:
    """Appends rows to `run_dir/log.csv` and mirrors them to TensorBoard when available.

    `resume_step`: None for a new run (a fresh file with its header), else the checkpoint's step (rows
    after it are dropped).
    """

    def __init__(self, run_dir: Path, resume_step: int | None = None, tensorboard: bool = True):
        self.path = Path(run_dir) / "log.csv"
        kept = _rows_up_to(self.path, resume_step) if resume_step is not None else []
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(kept)
        atomic_write_text(self.path, buffer.getvalue())
        self._file = open(self.path, "a", encoding="utf-8", newline="")  # noqa: SIM115 (closed in close())
        self._tb = _summary_writer(Path(run_dir) / "tb", resume_step) if tensorboard else None

    def write(self, step: int, **values) -> None:
        """Append one row (missing columns are empty) and flush it to disk."""
        row = {"step": step, **values}
        try:
            self._file.write(",".join(_cell(row.get(c)) for c in COLUMNS) + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())
        except OSError as exc:  # e.g. a full disk: name the file instead of a bare errno
            raise user_error_for(exc, self.path) from exc
        if self._tb is not None:
            for key in COLUMNS[1:]:
                value = values.get(key)
                if isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value)):
                    self._tb.add_scalar(f"train/{key}" if key != "val_psnr" else "val/psnr", value, step)
            self._tb.flush()

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()


def _summary_writer(folder: Path, resume_step: int | None):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(folder), purge_step=resume_step + 1 if resume_step is not None else None)
