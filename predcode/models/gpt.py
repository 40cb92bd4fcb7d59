r"""A small decoder-only character transformer (GPT-style) with value nodes.

Input: integer token ids ``[batch, length]`` (``length <= context``).  Output: the logits of
the next token at every position, ``[batch, length, vocab]``, held by one output node with
a categorical energy (the cross-entropy summed over positions).  Pre-norm blocks:

.. math::
    h_0 = W_e[\mathrm{ids}] + P_{1:L} \;\text{(node embed)}, \qquad
    a_k = \mathrm{Attn}_k(\mathrm{LN}(h_{k-1})) \;\text{(node block{k}.attn)},

.. math::
    m_k = \mathrm{MLP}_k(\mathrm{LN}(h_{k-1} + a_k)) \;\text{(node block{k}.mlp)}, \qquad
    h_k = h_{k-1} + a_k + m_k \;\text{(node block{k})},

and the logits :math:`W_o\,\mathrm{LN}(h_K)` (node ``out``).  ``Attn`` is causal multi-head
self-attention through ``F.scaled_dot_product_attention(..., is_causal=True)``; ``MLP`` is
``Linear(w, 4w) -> GELU -> Linear(4w, w)``.  With ``nodes="blocks"`` only ``embed``, the
block outputs and ``out`` are value nodes (each block's predictor is then the whole block).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..checks import require_positive
from ..exceptions import OptionError
from ..node import Node


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention over ``[batch, length, width]``."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise OptionError(f"width {width} is not divisible by heads {heads}")
        self.heads, self.head_dim = heads, width // heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        q, k, v = (t.unflatten(-1, (self.heads, self.head_dim)).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).flatten(2))


class Block(nn.Module):
    """Pre-norm transformer block with nodes after attention, MLP and the block."""

    def __init__(self, width: int, heads: int, nodes: str) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, heads)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))
        self.sublayer_nodes = nodes == "sublayers"
        if self.sublayer_nodes:
            self.attn_node, self.mlp_node = Node(), Node()
        self.node = Node()

    def forward(self, x: Tensor) -> Tensor:
        a = self.attn(self.ln1(x))
        if self.sublayer_nodes:
            a = self.attn_node(a)
        m = self.mlp(self.ln2(x + a))
        if self.sublayer_nodes:
            m = self.mlp_node(m)
        return self.node(x + a + m)


class GPT(nn.Module):
    """Decoder-only character transformer (see the module docstring).

    Args:
        vocab: number of tokens.
        context: the longest input (the number of learned positions).
        width: embedding width.
        depth: number of blocks.
        heads: attention heads.
        nodes: ``"sublayers"`` (default: nodes after every attention, MLP and block) or
            ``"blocks"`` (after every block only).
    """

    def __init__(
        self,
        vocab: int,
        context: int = 64,
        width: int = 128,
        depth: int = 4,
        heads: int = 4,
        *,
        nodes: Literal["sublayers", "blocks"] = "sublayers",
    ) -> None:
        super().__init__()
        if min(vocab, context, width, depth, heads) < 1:
            raise OptionError(
                "vocab, context, width, depth and heads must be >= 1, got "
                f"{vocab}, {context}, {width}, {depth}, {heads}"
            )
        if nodes not in ("sublayers", "blocks"):
            raise OptionError(f"nodes must be 'sublayers' or 'blocks', got {nodes!r}")
        self.vocab, self.context = vocab, context
        self.tokens = nn.Embedding(vocab, width)
        self.positions = nn.Parameter(torch.zeros(context, width))  # N(0, 0.02) below
        self.embed = Node()
        self.blocks = nn.ModuleList(Block(width, heads, nodes) for _ in range(depth))
        self.ln = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab)
        self.out = Node("ce")
        self._init_weights()

    def _init_weights(self) -> None:
        """GPT-2's initialisation (N(0, 0.02) weights, zero biases, the residual projections
        scaled by 1/sqrt(2 depth)) except the token embedding, N(0, 1) as ``nn.Embedding``'s
        default: a residual stream of unit scale keeps LayerNorm's Jacobian of order one.
        With GPT-2's 0.02 it is about 30, and a relaxation that moves the block outputs
        by a small error moves the normalised features far (error-based PC's gradient for
        the last LayerNorm and the head then points away from backprop's at init)."""
        for name, p in self.named_parameters():
            if name == "tokens.weight":
                nn.init.normal_(p, 0.0, 1.0)
            elif p.dim() >= 2:
                std = 0.02 / (2 * len(self.blocks)) ** 0.5 if name.endswith(("proj.weight", "mlp.2.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, ids: Tensor) -> Tensor:
        h = self.embed(self.tokens(ids) + self.positions[: ids.size(1)])
        for block in self.blocks:
            h = block(h)
        return self.out(self.head(self.ln(h)))

    @torch.no_grad()
    def generate(
        self, prompt: Tensor, length: int, *, temperature: float = 1.0, generator: torch.Generator | None = None
    ) -> Tensor:
        """``prompt`` (1-D ids) followed by ``length`` sampled tokens (the last ``context``
        tokens condition each step; ``softmax(logits / temperature)``)."""
        require_positive(temperature, "temperature")
        ids = prompt.reshape(1, -1).to(self.head.weight.device)
        for _ in range(length):
            logits = self(ids[:, -self.context :])[0, -1] / temperature
            probs = F.softmax(logits.float(), dim=-1)
            nxt = torch.multinomial(probs.cpu(), 1, generator=generator).to(ids.device)
            ids = torch.cat([ids, nxt.reshape(1, 1)], dim=1)
        return ids[0]


def gpt(vocab: int, context: int = 64, width: int = 128, depth: int = 4, heads: int = 4, **kwargs) -> GPT:
    """A :class:`GPT` (keyword option: ``nodes``)."""
    return GPT(vocab, context, width, depth, heads, **kwargs)
