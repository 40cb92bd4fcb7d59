r"""Recurrent networks unrolled through time, a value node per time step.

Inputs are ``[batch, seq_len, features]`` (one-hot characters for language modelling);
the loop over ``seq_len`` (fixed at construction) is unrolled when the model is traced,
and one ``Node`` called at every step gives the slots ``h``, ``h:1``, ..., all sharing the
cell's weights.  With ``many_to_one=False`` (language modelling) the output node holds
the logits of every step, ``[batch, seq_len, vocab]``, with a categorical energy summed
over steps; with ``many_to_one=True`` only the last step's.

Elman RNN:  :math:`h_t = \tanh(W x_t + U h_{t-1} + b)` (node ``h``).

LSTM: gates :math:`[i, f, g, o] = W x_t + U h_{t-1} + b`,

.. math:: c_t = \sigma(f) \odot c_{t-1} + \sigma(i) \odot \tanh(g) \;\text{(node c)},\qquad
          h_t = \sigma(o) \odot \tanh(c_t) \;\text{(node h)}.

:math:`h_{t-1}` feeds :math:`c_t` and :math:`h_t` (through the output gate), so an LSTM
graph is not layered; fixed prediction is exact on it, Z-IL after
:func:`predcode.convert.layered`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import OptionError
from ..node import Node


def _check(vocab: int, hidden: int, seq_len: int) -> None:
    if min(vocab, hidden, seq_len) < 1:
        raise OptionError(f"vocab, hidden and seq_len must be >= 1, got {vocab}, {hidden}, {seq_len}")


class CharRNN(nn.Module):
    """Elman RNN over ``seq_len`` steps with a node per hidden state and a linear readout."""

    def __init__(
        self,
        vocab: int,
        hidden: int,
        seq_len: int,
        *,
        many_to_one: bool = False,
        output_energy: str = "ce",
        outputs: int | None = None,
    ) -> None:
        super().__init__()
        _check(vocab, hidden, seq_len)
        self.seq_len, self.many_to_one = seq_len, many_to_one
        self.ih = nn.Linear(vocab, hidden)
        self.hh = nn.Linear(hidden, hidden, bias=False)
        self.readout = nn.Linear(hidden, outputs or vocab)
        self.h = Node()
        self.out = Node(output_energy)

    def forward(self, x: Tensor) -> Tensor:
        states = []
        h = self.h(torch.tanh(self.ih(x[:, 0])))
        states.append(h)
        for t in range(1, self.seq_len):
            h = self.h(torch.tanh(self.ih(x[:, t]) + self.hh(h)))
            states.append(h)
        if self.many_to_one:
            return self.out(self.readout(h))
        return self.out(torch.stack([self.readout(s) for s in states], dim=1))


class CharLSTM(nn.Module):
    """LSTM over ``seq_len`` steps with nodes ``c`` (cell) and ``h`` (hidden) per step."""

    def __init__(
        self,
        vocab: int,
        hidden: int,
        seq_len: int,
        *,
        many_to_one: bool = False,
        output_energy: str = "ce",
        outputs: int | None = None,
    ) -> None:
        super().__init__()
        _check(vocab, hidden, seq_len)
        self.seq_len, self.many_to_one, self.hidden = seq_len, many_to_one, hidden
        self.ih = nn.Linear(vocab, 4 * hidden)
        self.hh = nn.Linear(hidden, 4 * hidden, bias=False)
        self.readout = nn.Linear(hidden, outputs or vocab)
        self.c = Node()
        self.h = Node()
        self.out = Node(output_energy)

    def _gates(self, pre: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        n = self.hidden
        return (
            torch.sigmoid(pre[:, :n]),
            torch.sigmoid(pre[:, n : 2 * n]),
            torch.tanh(pre[:, 2 * n : 3 * n]),
            torch.sigmoid(pre[:, 3 * n :]),
        )

    def forward(self, x: Tensor) -> Tensor:
        states = []
        i, _, g, o = self._gates(self.ih(x[:, 0]))
        c = self.c(i * g)
        h = self.h(o * torch.tanh(c))
        states.append(h)
        for t in range(1, self.seq_len):
            i, f, g, o = self._gates(self.ih(x[:, t]) + self.hh(h))
            c = self.c(f * c + i * g)
            h = self.h(o * torch.tanh(c))
            states.append(h)
        if self.many_to_one:
            return self.out(self.readout(h))
        return self.out(torch.stack([self.readout(s) for s in states], dim=1))


def rnn(vocab: int, hidden: int, seq_len: int, **kwargs) -> CharRNN:
    """A :class:`CharRNN` (keyword options: ``many_to_one``, ``output_energy``, ``outputs``)."""
    return CharRNN(vocab, hidden, seq_len, **kwargs)


def lstm(vocab: int, hidden: int, seq_len: int, **kwargs) -> CharLSTM:
    """A :class:`CharLSTM` (keyword options: ``many_to_one``, ``output_energy``, ``outputs``)."""
    return CharLSTM(vocab, hidden, seq_len, **kwargs)
