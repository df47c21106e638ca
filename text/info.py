"""What a dataset tells the task built on it: one typed object handed from the DataModule to the task."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DataInfo:
    """Facts of a dataset that decide a task's shape. A task reads the fields it needs and fails, naming the
    data, when one it needs is missing.

    Args:
        name: the dataset (`data=` choice), for messages.
        num_labels, label_names: classification sets (CLUE): the classes, in label-id order.
        entity_types, span_extraction: span sets: the span types (CLUENER's ten, CMRC2018's one "answer"),
            and whether one span is extracted per question (CMRC2018) rather than every entity (NER).
        num_choices, distinct_answers: multiple choice: the options per question, and whether questions
            that share candidates take distinct answers (CHID's blanks of one passage).
        max_length: the longest sequence the data builds (dialogues: prompt + reply stay within it).
        tasks: data=multitask: each sub-task's own DataInfo, by sub-task name.
    """

    name: str
    num_labels: int | None = None
    label_names: tuple[str, ...] | None = None
    entity_types: tuple[str, ...] | None = None
    span_extraction: bool = False
    num_choices: int | None = None
    distinct_answers: bool = False
    max_length: int | None = None
    tasks: dict[str, DataInfo] | None = None

    def require(self, field: str, task: str):
        value = getattr(self, field)
        if value is None:
            raise ValueError(f"task={task} needs the {field} of its data, which data={self.name} does not give")
        return value
