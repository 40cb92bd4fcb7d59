"""Attention and token inputs in the converter: nn.MultiheadAttention and
F.scaled_dot_product_attention as whole nodes and taken apart at op granularity,
TransformerEncoderLayer inside, -inf masks, constants made from a tensor, named blocks
inside built-in modules, integer token ids and per-position integer targets."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from predcode import ZIL, FixedPrediction, GraphError, InputError
from predcode.convert import convert, layered
from predcode.rules import Backprop, ErrorPC, InferenceLearning

B, L, D = 3, 5, 8


def data(classes: int = 3):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(B, L, D, generator=g, dtype=torch.float64), torch.randint(0, classes, (B,), generator=g))


def grads_of(model, x, y):
    return torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))


def rule_grads(rule, graph, model, x, y):
    """The rule's gradients in the order of ``model``'s parameters, which the converted
    graph shares (a traced graph may hold them in another order)."""
    model.zero_grad(set_to_none=True)
    rule.gradients(graph, x, y)
    return [p.grad.detach().clone() for p in model.parameters()]


class WithMHA(nn.Module):
    def __init__(self, mask: str | None = None, batch_first: bool = True):
        super().__init__()
        self.inp = nn.Linear(D, 16)
        self.attn = nn.MultiheadAttention(16, 2, batch_first=batch_first)
        self.out = nn.Linear(16, 3)
        self.mask = mask
        self.register_buffer("causal", torch.triu(torch.full((L, L), float("-inf")), 1))
        self.register_buffer("causal_bool", torch.triu(torch.ones(L, L, dtype=torch.bool), 1))

    def forward(self, x):
        h = torch.tanh(self.inp(x))
        if self.mask == "float":
            a, _ = self.attn(h, h, h, attn_mask=self.causal)
        elif self.mask == "bool":
            a, _ = self.attn(h, h, h, attn_mask=self.causal_bool, need_weights=False)
        else:
            a, _ = self.attn(h, h, h)
        return self.out(a.mean(1))


class WithEncoder(nn.Module):
    def __init__(self, norm_first: bool = False):
        super().__init__()
        self.inp = nn.Linear(D, 16)
        self.enc = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True, norm_first=norm_first)
        self.out = nn.Linear(16, 3)

    def forward(self, x):
        return self.out(self.enc(torch.tanh(self.inp(x))).mean(1))


class HandMasked(nn.Module):
    """Single-head attention written out, with a -inf causal mask added to the scores."""

    def __init__(self):
        super().__init__()
        self.inp, self.out = nn.Linear(D, 16), nn.Linear(16, 3)
        self.register_buffer("mask", torch.triu(torch.full((L, L), float("-inf")), 1))

    def forward(self, x):
        h = torch.tanh(self.inp(x))
        scores = h @ h.transpose(1, 2) + self.mask
        return self.out((scores.softmax(-1) @ h).mean(1))


class WithSDPA(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp, self.out = nn.Linear(D, 16), nn.Linear(16, 3)

    def forward(self, x):
        q = torch.tanh(self.inp(x)).unflatten(-1, (2, 8)).transpose(1, 2)
        a = F.scaled_dot_product_attention(q, q, q, is_causal=True)
        return self.out(a.transpose(1, 2).flatten(2).mean(1))


@pytest.mark.parametrize("mask", [None, "float", "bool"])
@pytest.mark.parametrize("at", ["layers", "modules", "ops"])
def test_multihead_attention_converts_and_fixed_prediction_is_exact(mask, at, max_rel_error):
    torch.manual_seed(0)
    model = WithMHA(mask).double()
    x, y = data()
    graph = convert(model, at=at, output_energy="ce", example_inputs=x)
    if at == "ops":  # taken apart: nodes on its projections, scores, softmax, ...
        assert "attn.out_proj" in graph.names and "softmax" in graph.names
        assert len(graph.names) > 15
    else:  # kept whole: one node on its output
        assert "attn[0]" in graph.names
    want = grads_of(model, x, y)
    assert max_rel_error(rule_grads(FixedPrediction(), graph, model, x, y), want) <= 1e-10
    # the decomposition computes what the module computes
    with torch.no_grad():
        assert torch.allclose(graph.model(x), model(x), atol=1e-12)


def test_multihead_attention_whole_node_zil_exact(max_rel_error):
    torch.manual_seed(1)
    model = WithMHA("float").double()
    x, y = data()
    graph = convert(model, at="layers", output_energy="ce", example_inputs=x)
    assert max_rel_error(rule_grads(ZIL(), graph, model, x, y), grads_of(model, x, y)) <= 1e-10


def test_multihead_attention_not_batch_first_is_refused_with_the_fix():
    with pytest.raises(GraphError, match="batch_first=True"):
        convert(WithMHA(batch_first=False))


def test_multihead_attention_not_batch_first_taken_apart_at_ops(max_rel_error):
    class SeqFirst(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(D, 2)
            self.out = nn.Linear(D, 3)

        def forward(self, x):
            s = x.transpose(0, 1)
            return self.out(self.attn(s, s, s)[0].mean(0))

    torch.manual_seed(2)
    model = SeqFirst().double()
    x, y = data()
    graph = convert(model, at="ops", output_energy="ce", example_inputs=x)
    assert max_rel_error(rule_grads(FixedPrediction(), graph, model, x, y), grads_of(model, x, y)) <= 1e-10


@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_layer_taken_apart_at_ops(norm_first, max_rel_error):
    torch.manual_seed(3)
    model = WithEncoder(norm_first).double()
    x, y = data()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is kept whole, so no warning
        graph = convert(model, at="ops", output_energy="ce", example_inputs=x)
    assert {"enc.linear1", "enc.norm1", "enc.self_attn.out_proj", "softmax"} <= set(graph.names)
    assert max_rel_error(rule_grads(FixedPrediction(), graph, model, x, y), grads_of(model, x, y)) <= 1e-10


def test_builtin_module_kept_whole_at_ops_warns():
    class WithDecoderStack(nn.Module):
        def __init__(self):
            super().__init__()
            layer = nn.TransformerEncoderLayer(D, 2, 16, dropout=0.0, batch_first=True)
            self.stack = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
            self.out = nn.Linear(D, 3)

        def forward(self, x):
            return self.out(self.stack(x).mean(1))

    x, _ = data()
    with pytest.warns(UserWarning, match=r"keeps 'stack' \(TransformerEncoder\) whole"):
        convert(WithDecoderStack().double(), at="ops", example_inputs=x)


def test_named_block_inside_a_builtin_module_gets_its_node(max_rel_error):
    torch.manual_seed(4)
    model = WithEncoder().double()
    x, y = data()
    graph = convert(model, at=["inp", "enc.linear1", "out"], output_energy="ce", example_inputs=x)
    assert graph.names == ["x", "inp", "enc.linear1", "out"]
    assert max_rel_error(rule_grads(FixedPrediction(), graph, model, x, y), grads_of(model, x, y)) <= 1e-10


def test_named_block_never_called_is_an_error():
    class UsesWeightOnly(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(D, 4), nn.Linear(4, 3)

        def forward(self, x):
            return self.b(F.linear(x, self.a.weight)).mean(1)

    with pytest.raises(GraphError, match=r"never calls \['a'\]"):
        convert(UsesWeightOnly(), at=["a", "b"])


@pytest.mark.parametrize("model_type", [HandMasked, WithSDPA])
def test_minus_inf_mask_at_ops_no_node_on_masked_scores_and_zil_exact(model_type, max_rel_error):
    torch.manual_seed(5)
    model = model_type().double()
    x, y = data()
    graph = layered(convert(model, at="ops", output_energy="ce", example_inputs=x))
    want = grads_of(model, x, y)
    for rule in (FixedPrediction(), ZIL()):
        got = rule_grads(rule, graph, model, x, y)
        assert all(torch.isfinite(g).all() for g in got)
        assert max_rel_error(got, want) <= 1e-10
    if model_type is HandMasked:
        assert "add" not in graph.names  # the -inf scores stay inside softmax's predictor
        assert "softmax" in graph.names


def test_zeros_like_at_ops_is_a_constant_not_a_node(max_rel_error):
    class ZeroStart(nn.Module):
        def __init__(self):
            super().__init__()
            self.cell, self.out = nn.RNNCell(D, 6), nn.Linear(6, 3)

        def forward(self, x):
            h = torch.zeros_like(x[:, 0, :6])
            for t in range(L):
                h = self.cell(x[:, t], h)
            return self.out(h)

    torch.manual_seed(6)
    model = ZeroStart().double()
    x, y = data()
    graph = convert(model, at="ops", output_energy="ce", example_inputs=x)
    assert "zeros_like" not in graph.names
    want = grads_of(model, x, y)
    assert max_rel_error(rule_grads(FixedPrediction(), graph, model, x, y), want) <= 1e-10


class TinyLM(nn.Module):
    def __init__(self, vocab: int = 7):
        super().__init__()
        self.emb = nn.Embedding(vocab, 8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, vocab)
        self.register_buffer("causal", torch.triu(torch.ones(L, L, dtype=torch.bool), 1))

    def forward(self, ids):
        h = self.emb(ids)
        return self.head(h + self.attn(h, h, h, attn_mask=self.causal, need_weights=False)[0])


@pytest.mark.parametrize("at", ["layers", "ops"])
def test_token_ids_and_per_position_targets(at, max_rel_error):
    torch.manual_seed(7)
    model = TinyLM().double()
    g = torch.Generator().manual_seed(1)
    ids, nxt = torch.randint(0, 7, (B, L), generator=g), torch.randint(0, 7, (B, L), generator=g)
    graph = convert(model, at=at, output_energy="ce", example_inputs=ids)
    loss = F.cross_entropy(model(ids).reshape(-1, 7), nxt.reshape(-1), reduction="sum") / B
    want = torch.autograd.grad(loss, list(model.parameters()))
    assert max_rel_error(rule_grads(FixedPrediction(), graph, model, ids, nxt), want) <= 1e-10
    assert max_rel_error(rule_grads(Backprop(), graph, model, ids, nxt), want) <= 1e-10
    stats = ErrorPC().gradients(graph, ids, nxt)
    assert abs(float(stats.loss.detach()) - float(loss.detach())) < 1e-10
    InferenceLearning().gradients(graph, ids, nxt)


def test_token_input_and_target_errors_are_clear():
    model = TinyLM()
    graph = convert(model, at="layers", output_energy="ce")
    ids = torch.randint(0, 7, (B, L))
    with pytest.raises(InputError, match=r"class labels of shape \(batch, 5\)"):
        Backprop().gradients(graph, ids, ids[:, :3])
    with pytest.raises(InputError, match=r"must lie in \[0, 6\]"):
        Backprop().gradients(graph, ids, ids + 1)
    with pytest.raises(InputError, match=r"token ids: each must lie in \[0, number of embeddings\)"):
        Backprop().gradients(graph, ids + 7, ids)
    with pytest.raises(InputError, match="dtype torch.bool"):
        Backprop().gradients(graph, ids > 3, ids)
