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

from ..exceptions import OptionError
from ..node import Node


def _check(vocab: int, hidden: int, seq_len: int) -> None:
    if min(vocab, hidden, seq_len) < 1:
        raise OptionError(f"vocab, hidden and seq_len must be >= 1, got {vocab}, {hidden}, {seq_len}")


class _Unrolled(nn.Module):
    """What both recurrent cells share: input weights ``ih`` and recurrent weights ``hh``
    (``gates`` blocks of ``hidden`` rows), a linear ``readout``, the value nodes named in
    ``node_names`` (one per state, each called once per step) and the output node ``out``."""

    gates: int
    node_names: tuple[str, ...]

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
        self.ih = nn.Linear(vocab, self.gates * hidden)
        self.hh = nn.Linear(hidden, self.gates * hidden, bias=False)
        self.readout = nn.Linear(hidden, outputs or vocab)
        for name in self.node_names:
            self.add_module(name, Node())
        self.out = Node(output_energy)

    def _output(self, states: list[Tensor]) -> Tensor:
        """The output node on the readout of the last step's hidden state (``many_to_one``)
        or of every step's, stacked along dim 1."""
        if self.many_to_one:
            return self.out(self.readout(states[-1]))
        return self.out(torch.stack([self.readout(s) for s in states], dim=1))


class CharRNN(_Unrolled):
    """Elman RNN over ``seq_len`` steps with a node per hidden state and a linear readout."""

    gates = 1
    node_names = ("h",)
    h: Node

    def forward(self, x: Tensor) -> Tensor:
        states = []
        h = self.h(torch.tanh(self.ih(x[:, 0])))
        states.append(h)
        for t in range(1, self.seq_len):
            h = self.h(torch.tanh(self.ih(x[:, t]) + self.hh(h)))
            states.append(h)
        return self._output(states)


class CharLSTM(_Unrolled):
    """LSTM over ``seq_len`` steps with nodes ``c`` (cell) and ``h`` (hidden) per step."""

    gates = 4
    node_names = ("c", "h")
    c: Node
    h: Node

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
        return self._output(states)


def rnn(vocab: int, hidden: int, seq_len: int, **kwargs) -> CharRNN:
    """A :class:`CharRNN` (keyword options: ``many_to_one``, ``output_energy``, ``outputs``)."""
    return CharRNN(vocab, hidden, seq_len, **kwargs)


def lstm(vocab: int, hidden: int, seq_len: int, **kwargs) -> CharLSTM:
    """A :class:`CharLSTM` (keyword options: ``many_to_one``, ``output_energy``, ``outputs``)."""
    return CharLSTM(vocab, hidden, seq_len, **kwargs)
