"""The model workloads of the race (issue 19), built the same way by every runner.

Imports torch (and torchvision / transformers) inside the functions, so that ``workloads.py``
stays import-free; seeds fix the weights, so every runner builds the same network.
"""

from __future__ import annotations

from typing import Any

# small transformer of the training step: rows of 8 features as tokens (as examples/encrypted_transformer_digits.py)
TFM_BATCH, TFM_SEQ, TFM_IN, TFM_D, TFM_HEADS, TFM_FF, TFM_CLASSES = 32, 8, 8, 32, 2, 64, 10
BERT_SEQ = 32


def resnet18() -> Any:
    """torchvision resnet18(num_classes=10), eval, batch norms with non-trivial running statistics."""
    import torch
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def bert() -> Any:
    """Hugging Face BertForSequenceClassification: 2 layers, hidden 128, 2 heads, built locally."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=1000, hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512,
                     max_position_embeddings=BERT_SEQ, num_labels=2, attn_implementation="sdpa")
    return BertForSequenceClassification(cfg).eval()


def small_transformer() -> Any:
    """Linear embedding + position embedding, one nn.TransformerEncoderLayer, mean pool, linear head."""
    import torch
    from torch import nn

    class SmallTransformer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Linear(TFM_IN, TFM_D)
            self.pos = nn.Parameter(torch.randn(1, TFM_SEQ, TFM_D) * 0.1)
            self.encoder = nn.TransformerEncoderLayer(TFM_D, TFM_HEADS, TFM_FF, dropout=0.0, batch_first=True)
            self.head = nn.Linear(TFM_D, TFM_CLASSES)

        def forward(self, x: Any) -> Any:
            return self.head(self.encoder(self.embed(x) + self.pos).mean(1))

    torch.manual_seed(0)
    return SmallTransformer()


def inputs(name: str) -> tuple[Any, ...]:
    """The workload's inputs (public token ids for BERT, values to share otherwise)."""
    import torch

    g = torch.Generator().manual_seed(1)
    if name == "resnet18_inference":
        return (torch.randn(1, 3, 32, 32, generator=g),)
    if name == "bert_inference":
        return (torch.randint(1, 1000, (1, BERT_SEQ), generator=g),)
    x = torch.rand(TFM_BATCH, TFM_SEQ, TFM_IN, generator=g)
    y = torch.randint(0, TFM_CLASSES, (TFM_BATCH,), generator=g)
    return x, y


BUILD = {"resnet18_inference": resnet18, "bert_inference": bert, "transformer_train_step": small_transformer}
