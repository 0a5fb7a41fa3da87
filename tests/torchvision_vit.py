"""The torchvision-layout ViT reference of the ViT-H/14 (SWAG) judge tests.

`reference(...)` is `torchvision.models.VisionTransformer` when torchvision imports. On this
project's CPU machines it does not: PyPI's Linux torchvision wheels link against CUDA builds of
torch (`libtorch_cuda.so`), and the CPU torch of the test extra has none, so `import torchvision`
fails. Then `reference` is `VisionTransformerReference`: the same network written here in plain
PyTorch (`nn.MultiheadAttention`, `nn.Conv2d`, `nn.LayerNorm`, exact `nn.GELU`), with the module
names and so the state-dict keys of torchvision 0.28's `vision_transformer.py`:

  conv_proj · class_token · encoder.pos_embedding · encoder.layers.encoder_layer_<i>.{ln_1,
  self_attention (in_proj_weight/bias, out_proj), ln_2, mlp.0, mlp.3} · encoder.ln · heads.head

and torchvision's forward: patches (conv, raster order) → [CLS] first → + position embeddings →
blocks x + attn(ln_1 x); x + mlp(ln_2 x) → ln → head on [CLS]. It was checked equal to torchvision
0.28's own module (random weights, state dict loaded both ways: max |Δlogit| 0 in float32) where
torchvision imports with its C++ ops stubbed (their registration fails without the extension).
"""

import collections

import numpy as np
import torch
from torch import nn


class _Block(nn.Module):

  def __init__(self, heads: int, width: int, mlp: int):
    super().__init__()
    self.ln_1 = nn.LayerNorm(width, eps=1e-6)
    self.self_attention = nn.MultiheadAttention(width, heads, batch_first=True)
    self.ln_2 = nn.LayerNorm(width, eps=1e-6)
    self.mlp = nn.Sequential(nn.Linear(width, mlp), nn.GELU(), nn.Dropout(0.0),
                             nn.Linear(mlp, width), nn.Dropout(0.0))

  def forward(self, x):
    y = self.ln_1(x)
    y, _ = self.self_attention(y, y, y, need_weights=False)
    x = x + y
    return x + self.mlp(self.ln_2(x))


class _Encoder(nn.Module):

  def __init__(self, length: int, layers: int, heads: int, width: int, mlp: int):
    super().__init__()
    self.pos_embedding = nn.Parameter(torch.empty(1, length, width).normal_(std=0.02))
    self.layers = nn.Sequential(collections.OrderedDict(
        (f"encoder_layer_{i}", _Block(heads, width, mlp)) for i in range(layers)))
    self.ln = nn.LayerNorm(width, eps=1e-6)

  def forward(self, x):
    return self.ln(self.layers(x + self.pos_embedding))


class VisionTransformerReference(nn.Module):
  """torchvision's VisionTransformer (no representation layer), re-derived in plain PyTorch."""

  def __init__(self, image_size, patch_size, num_layers, num_heads, hidden_dim, mlp_dim,
               num_classes=1000):
    super().__init__()
    self.patch_size = patch_size
    self.hidden_dim = hidden_dim
    self.conv_proj = nn.Conv2d(3, hidden_dim, patch_size, stride=patch_size)
    self.class_token = nn.Parameter(torch.zeros(1, 1, hidden_dim))
    length = (image_size // patch_size) ** 2 + 1
    self.encoder = _Encoder(length, num_layers, num_heads, hidden_dim, mlp_dim)
    self.heads = nn.Sequential(collections.OrderedDict(head=nn.Linear(hidden_dim, num_classes)))

  def forward(self, x):                                     # [N, 3, S, S]
    x = self.conv_proj(x)                                   # [N, D, S/p, S/p]
    x = x.reshape(x.shape[0], self.hidden_dim, -1).permute(0, 2, 1)
    x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)
    return self.heads(self.encoder(x)[:, 0])


def reference(image_size, patch_size, num_layers, num_heads, hidden_dim, mlp_dim,
              num_classes=1000) -> nn.Module:
  """torchvision's VisionTransformer where torchvision imports, else the re-derivation."""
  kwargs = dict(image_size=image_size, patch_size=patch_size, num_layers=num_layers,
                num_heads=num_heads, hidden_dim=hidden_dim, mlp_dim=mlp_dim,
                num_classes=num_classes)
  try:
    from torchvision.models import VisionTransformer  # pylint: disable=g-import-not-at-top
  except Exception:  # pylint: disable=broad-except  # ImportError, or its CUDA-only C++ ops
    return VisionTransformerReference(**kwargs)
  return VisionTransformer(**kwargs)


def random_state(module: nn.Module, seed: int, scale: float = 0.05) -> dict[str, np.ndarray]:
  """Every tensor of `module` redrawn (so each one matters), written back; the state dict as
  NumPy float32."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in module.named_parameters():
      base = 1.0 if name.endswith(("ln_1.weight", "ln_2.weight", "ln.weight")) else 0.0
      p.copy_(base + scale * torch.randn(p.shape, generator=gen) * (4 if "embedding" in name
                                                                      or "token" in name else 1))
  return {k: v.detach().numpy().astype(np.float32) for k, v in module.state_dict().items()}
