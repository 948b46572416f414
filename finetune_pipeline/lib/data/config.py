"""The `data` section of the run config: raw files, how rows map to chat records, cleaning rules, splits."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from finetune_pipeline.lib.data import formats
from finetune_pipeline.lib.section import Section, rules


def local_folder(value: str) -> str:
    """Path('s3://b/x') would silently become a relative folder named 's3:'."""
    if "://" in value:
        raise ValueError(f"is {value!r}, a URL; it must be a local folder (only artifacts_root may be an "
                         "object-storage URL), see docs/kubernetes.md")
    return value


def _format_list() -> str:
    names = formats.names()
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]


class ColumnMapping(Section):
    """How raw rows become chat records.

    - `seed`: columns `system_prompt`, `input`, `output` (names configurable below).
    - `chat`: a `messages` column holding an OpenAI-style list of turns.
    - `table`: a text column plus label columns; the labels become the JSON
      output, e.g. `text,category` -> `{"category": ...}`.
    """

    # A str checked against the registry, not a Literal: a format module added to
    # data/formats is accepted without touching this file.
    format: str = Field("seed", description=f"The raw row format, one of the registered formats "
                                            f"(finetune_pipeline/lib/data/formats): {_format_list()}.",
                        examples=formats.names())
    system_prompt: str = Field("system_prompt", description="seed: the column holding the system prompt (optional).")
    input: str = Field("input", description="seed: the column holding the user's input.")
    output: str = Field("output", description="seed: the column holding the assistant's answer.")
    messages: str = Field("messages", description="chat: the column holding the list of {role, content} turns.")
    text: str = Field("text", description="table: the column whose text becomes the user turn.")
    labels: list[str] = Field(["category"], description="table: the label columns; they become the JSON answer, "
                                                        "e.g. [category] -> {\"category\": ...}.")
    default_system_prompt: str = Field("", description="The system prompt of rows that have none "
                                                       "(chat and table formats).")

    @field_validator("format")
    @classmethod
    def _registered(cls, value: str) -> str:
        if value not in formats.names():
            raise ValueError(f"must be a registered row format: {_format_list()} (got another string)")
        return value


class SplitConfig(Section):
    """How kept records are divided into train, val and test.

    - `hash` (default): by a hash of the normalised user input (val_fraction,
      test_fraction), so a row keeps its split as the data grows.
    - `test_file`: every row of the raw file named by `test_file` (relative to
      data.raw_dir) is the test split, as published: a benchmark's official test
      set stays whole and its figures compare with the literature. Other rows are
      hash-split into train and val; one whose input equals a test row is
      quarantined (`duplicate_of_test_row`), so nothing of the test set is trained on.

    Few-shot: `train_per_class: k` keeps k train rows of each class (the value of
    `class_field` in the JSON output), drawn with `seed`; `val_per_class` does the
    same for val. Rows not drawn are kept out of every split and listed in the
    dataset's `sources.jsonl` as `unused`, with their counts in `stats.json`.
    """

    policy: Literal["hash", "test_file"] = Field(
        "hash", description="hash: split every row by a hash of its input; test_file: the rows of test_file are "
                            "the test split.")
    test_file: str = Field("", description="With policy test_file: the raw file (relative to data.raw_dir) that "
                                           "is the test split, whole.")
    train_per_class: int = Field(0, ge=0, description="Few-shot: keep this many train rows of each class; "
                                                      "0 = every train row.")
    val_per_class: int = Field(0, ge=0, description="Few-shot: keep this many val rows of each class; "
                                                    "0 = every val row.")
    class_field: str = Field("category", description="The field of the JSON output that names a row's class "
                                                     "(for the per-class draws).")
    seed: int = Field(42, description="Seed of the per-class draws.")

    @model_validator(mode="after")
    def _rules(self) -> SplitConfig:
        rules(
            (not (self.policy == "test_file" and not self.test_file),
             "`test_file` is required with `policy`: test_file (it names the raw file that is the test split)"),
            (not (self.policy != "test_file" and self.test_file),
             "`test_file` is set but `policy` is not test_file; set `policy`: test_file to use it"),
            (not ((self.train_per_class or self.val_per_class) and not self.class_field),
             "`train_per_class` and `val_per_class` need `class_field` (the output's label field)"),
        )
        return self


class DataConfig(Section):
    """Raw data: where it is, how rows become chat records, the cleaning rules and the splits."""

    raw_dir: str = Field("data/raw", description="The folder of raw files (*.jsonl, *.csv, *.parquet), relative "
                                                 "to the config file; a local folder, never a URL.")
    mapping: ColumnMapping = Field(default_factory=ColumnMapping, description="How raw rows become chat records.")
    split: SplitConfig = Field(default_factory=SplitConfig, description="How kept records are split into "
                                                                        "train, val and test.")
    # The seed's rule: shorter inputs are noise ("ok", "help!!").
    min_input_chars: int = Field(10, ge=0, description="Rows whose user input is shorter are quarantined "
                                                       "(too_short).")
    # The product extracts structured fields (the seed's rule); off for free-text chat data.
    require_json_output: bool = Field(True, description="The assistant's answer must be a JSON object; "
                                                        "turn off for free-text chat data.")
    # Longer rows would be truncated in training, which silently drops labels.
    max_tokens: int = Field(512, gt=0, description="Rows longer than this many tokens (base model's tokenizer, "
                                                   "fully templated) are quarantined.")
    val_fraction: float = Field(0.1, ge=0, lt=1, description="Share of rows in the val split (hash policy; the "
                                                             "pool val_per_class draws from).")
    test_fraction: float = Field(0.1, ge=0, lt=1, description="Share of rows in the test split (hash policy).")
    min_train_rows: int = Field(100, ge=0, description="Blocking check: training never starts on fewer "
                                                       "train rows.")
    recommended_train_rows: int = Field(1000, ge=0, description="A warning (not blocking) below this many "
                                                                "train rows.")

    @field_validator("raw_dir")
    @classmethod
    def _local(cls, value: str) -> str:
        return local_folder(value)  # read in place by the raw reader

    @model_validator(mode="after")
    def _rules(self) -> DataConfig:
        rules((self.val_fraction + self.test_fraction < 1,
               "`val_fraction` + `test_fraction` must be < 1 (some rows must be left for train)"))
        return self
