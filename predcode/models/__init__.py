"""Model factories: ordinary ``nn.Module`` s with :class:`~predcode.Node` markers."""

from .bidirectional import Bidirectional, bidirectional
from .cnn import VGG5, VGG7, cnn, rosenbaum_cnn, vgg, vgg5, vgg7
from .decoder import decoder
from .gpt import GPT, gpt
from .mlp import ACTIVATIONS, activation, mlp
from .residual import ResidualBlock, ResidualCNN, ResidualMLP, residual_cnn, residual_mlp
from .resnet import BasicBlock, ResNet, resnet
from .rnn import CharLSTM, CharRNN, lstm, rnn

__all__ = [
    "ACTIVATIONS",
    "activation",
    "mlp",
    "VGG5",
    "VGG7",
    "cnn",
    "rosenbaum_cnn",
    "vgg",
    "vgg5",
    "vgg7",
    "decoder",
    "BasicBlock",
    "ResNet",
    "resnet",
    "CharLSTM",
    "CharRNN",
    "lstm",
    "rnn",
    "ResidualBlock",
    "ResidualCNN",
    "ResidualMLP",
    "residual_cnn",
    "residual_mlp",
    "GPT",
    "gpt",
    "Bidirectional",
    "bidirectional",
]
