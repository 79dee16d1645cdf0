"""The `Text` spec: UTF-8 text -> token ids and attention mask (a local tokenizer or byte ids).

Place in the data flow: the reader hands `Text.decode` the bytes of the sample's text field. A
tokenizer is loaded from a local directory once per process (never from a model hub); the
batch pads texts of different lengths (`mmsample.batch`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from .base import bad_parameter, check_spec_field

__all__ = ["PADDINGS", "TOKENIZER_FILES", "Text"]

PADDINGS = ("max_length", "longest", "do_not_pad")


# Files of which a transformers tokenizer directory holds at least one.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "vocab.json",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
)


def _check_tokenizer(tokenizer: object, byte_ids: object) -> None:
    """A Text tokenizer is an existing local directory holding a tokenizer, never a hub name."""
    if not isinstance(byte_ids, bool):
        raise bad_parameter("Text", "byte_ids", "a bool", byte_ids)
    if tokenizer is None:
        if not byte_ids:
            raise ValueError(
                "Text needs a tokenizer: give 'tokenizer' (a local transformers tokenizer "
                "directory, e.g. one saved with tokenizer.save_pretrained(dir)) or "
                "byte_ids=True for one id per UTF-8 byte (0..255, no vocabulary)."
            )
        return
    if byte_ids:
        raise ValueError(
            f"The 'byte_ids' parameter of Text must be False when a 'tokenizer' is given "
            f"(got tokenizer={tokenizer!r}); choose one of the two."
        )
    if not isinstance(tokenizer, str | Path):
        raise bad_parameter(
            "Text", "tokenizer", "None or a local tokenizer directory (str)", tokenizer
        )
    path = Path(tokenizer)
    if not path.is_dir():
        what = "is a file, not a directory" if path.exists() else "does not exist"
        raise ValueError(
            f"The 'tokenizer' parameter of Text must be a local tokenizer directory; "
            f"{str(path)!r} {what} (resolved: {path.resolve()}). mmsample never downloads: "
            f"save the tokenizer once with AutoTokenizer.from_pretrained(name)"
            f".save_pretrained(dir) and pass that dir."
        )
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise ValueError(
            f"The 'tokenizer' parameter of Text must be a local tokenizer directory; "
            f"{str(path)!r} holds none of {list(TOKENIZER_FILES)}. Pass the directory that "
            f"tokenizer.save_pretrained(dir) wrote."
        )


@functools.cache
def _tokenizer(path: str) -> Any:
    """Load a transformers tokenizer from a local directory, once per process, never the hub
    (an absolute path of an existing directory, and local_files_only)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(Path(path).resolve()), local_files_only=True)


@dataclass
class Text:
    """UTF-8 text -> {"input_ids": long [L], "attention_mask": long [L]}.

    Give exactly one of `tokenizer` (a local transformers tokenizer directory, checked at
    construction; never looked up on a model hub) or `byte_ids=True` (one id per UTF-8 byte,
    0..255, no vocabulary); neither raises ValueError. Ids are truncated to `max_length` (with
    `truncation`) and, with padding="max_length", padded with the tokenizer's pad id (byte ids:
    0) and mask 0, so L = max_length; with "longest" or "do_not_pad" L is the text's own length
    and `mmsample.batch.Collate` pads a batch to its longest text (pad id 0, mask 0).
    """

    field: str = "txt"
    tokenizer: str | None = None
    max_length: int = 64
    padding: Literal["max_length", "longest", "do_not_pad"] = "max_length"
    truncation: bool = True
    byte_ids: bool = False

    def __post_init__(self) -> None:
        check_spec_field("Text", self.field)
        _check_tokenizer(self.tokenizer, self.byte_ids)
        if isinstance(self.tokenizer, Path):
            self.tokenizer = str(self.tokenizer)
        if (
            not isinstance(self.max_length, int)
            or isinstance(self.max_length, bool)
            or self.max_length < 1
        ):
            raise bad_parameter("Text", "max_length", "an int >= 1", self.max_length)
        if self.padding not in PADDINGS:
            raise bad_parameter("Text", "padding", f"one of {list(PADDINGS)}", self.padding)
        if not isinstance(self.truncation, bool):
            raise bad_parameter("Text", "truncation", "a bool", self.truncation)

    def decode(
        self, data: bytes, *, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """Tokenize one text (deterministic; generator unused). Raises ValueError on text that
        is not valid UTF-8."""
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"text is not valid UTF-8 ({err})") from None
        pad_id = 0
        if self.tokenizer is None:
            ids = list(data[: self.max_length] if self.truncation else data)
        else:
            tokenizer = _tokenizer(self.tokenizer)
            enc = tokenizer(text, truncation=self.truncation, max_length=self.max_length)
            ids = [int(i) for i in enc["input_ids"]]
            pad_id = int(tokenizer.pad_token_id or 0)
        mask = [1] * len(ids)
        if self.padding == "max_length" and len(ids) < self.max_length:
            fill = self.max_length - len(ids)
            ids += [pad_id] * fill
            mask += [0] * fill
        return {
            "input_ids": torch.tensor(ids, dtype=torch.long),
            "attention_mask": torch.tensor(mask, dtype=torch.long),
        }
