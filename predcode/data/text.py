"""Text corpora for character-level language models (``shakespeare``).

Public API::

    load_text(name="shakespeare", split="train") -> str
    CharVocab.from_text(text) / vocab.encode(text) -> LongTensor / vocab.decode(ids) -> str
    char_windows(ids, seq_len, stride=None) -> (inputs, targets)   # next-character pairs
    token_windows(name, context) -> (train_x, train_y, test_x, test_y)  # for language models
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .cache import maybe_gunzip, verify_sha256
from .fetcher import locate
from .registry import get_spec


def load_text(name: str = "shakespeare", split: str = "train") -> str:
    """The text of one split of a cached corpus, checked against its sha256.

    Raises:
        DatasetNotFoundError: not fetched yet (the message says ``predcode data fetch NAME``).
        ChecksumMismatchError: the cached file is corrupt.
    """
    spec = get_spec(name)
    if spec.kind != "text":
        raise ValueError(f"{spec.name} is not a text corpus; load it with predcode.data.load")
    if split not in spec.splits:
        raise ValueError(f"unknown split {split!r} for {spec.name}; choose from {sorted(spec.splits)}")
    (filename,) = spec.splits[split]
    path = locate(spec, [filename])[filename]
    content = maybe_gunzip(path.read_bytes(), label=str(path))
    verify_sha256(
        content,
        spec.checksums.get(filename),
        label=str(path),
        hint=f"The cached file is corrupt; fetch it again with:  predcode data fetch {spec.name}",
    )
    return content.decode("ascii")


@dataclass(frozen=True)
class CharVocab:
    """Characters <-> integer ids (sorted characters, so the mapping is reproducible)."""

    chars: str

    @classmethod
    def from_text(cls, *texts: str) -> CharVocab:
        return cls("".join(sorted(set("".join(texts)))))

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> Tensor:
        unknown = sorted(set(text) - set(self.chars))
        if unknown:
            raise ValueError(f"characters {unknown!r} are not in the vocabulary")
        if text.isascii() and self.chars.isascii():  # one table lookup instead of a loop
            table = torch.zeros(128, dtype=torch.long)
            table[torch.tensor([ord(c) for c in self.chars], dtype=torch.long)] = torch.arange(len(self.chars))
            if not text:
                return torch.zeros(0, dtype=torch.long)
            return table[torch.frombuffer(bytearray(text, "ascii"), dtype=torch.uint8).long()]
        index = {c: i for i, c in enumerate(self.chars)}
        return torch.tensor([index[c] for c in text], dtype=torch.long)

    def decode(self, ids: Tensor) -> str:
        return "".join(self.chars[int(i)] for i in ids)


def char_windows(ids: Tensor, seq_len: int, stride: int | None = None) -> tuple[Tensor, Tensor]:
    """Windows ``inputs[k] = ids[s:s+seq_len]`` and ``targets[k] = ids[s+1:s+seq_len+1]``
    (each character's successor), ``s = k * stride`` (default: non-overlapping)."""
    stride = stride or seq_len
    if seq_len < 1 or stride < 1:
        raise ValueError(f"seq_len and stride must be >= 1, got {seq_len}, {stride}")
    count = (len(ids) - seq_len - 1) // stride + 1
    if count < 1:
        raise ValueError(f"a text of {len(ids)} characters is too short for windows of {seq_len}")
    starts = torch.arange(count) * stride
    offsets = torch.arange(seq_len)
    index = starts[:, None] + offsets[None, :]
    return ids[index], ids[index + 1]


def corpus_vocab(name: str = "shakespeare") -> CharVocab:
    """The vocabulary of a corpus: every character of its train and test splits."""
    return CharVocab.from_text(load_text(name, "train"), load_text(name, "test"))


def token_windows(name: str = "shakespeare", context: int = 64) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A corpus as next-token pairs for a language model: ``(train_x, train_y, test_x,
    test_y)``, each ``(windows, context)`` of token ids (:func:`corpus_vocab`), the targets
    the inputs shifted by one; non-overlapping windows of each split."""
    vocab = corpus_vocab(name)
    train_x, train_y = char_windows(vocab.encode(load_text(name, "train")), context)
    test_x, test_y = char_windows(vocab.encode(load_text(name, "test")), context)
    return train_x, train_y, test_x, test_y
