"""Building blocks of the Latte DiT: attention, the adaLN-Zero transformer block, the final layer."""

from functools import partial

import torch
import torch.nn.functional as F
from einops import rearrange
from timm.layers import Mlp
from torch import nn


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    # One fused kernel for x * (1 + scale) + shift; shift/scale broadcast over the token dims.
    return torch.addcmul(shift, x, 1 + scale)


def per_frame(mod: torch.Tensor) -> torch.Tensor:
    """Modulation (B, kD) for the whole clip, or (B, F, kD) frame by frame, -> broadcastable over (B, F, N, kD)."""
    return mod[:, None, None] if mod.ndim == 2 else mod[:, :, None]


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Scaled dot-product attention of (G, H, L, d) tensors. On a CPU, ATen's fused bfloat16 backward is up to 8x
    slower than float32's at short sequences (16 tokens, d 64: 9.8 vs 1.2 ms) and pays only once L x d^2 reaches
    2^20 (256 tokens at d 64: 0.86x, 1024 at d 32: 0.94x; `python bench/cpu_attention.py`), so shorter bfloat16
    attention runs in float32, with autocast off around it (CPU autocast would cast it back to bfloat16)."""
    length, dim = q.shape[-2:]
    if q.device.type != "cpu" or length * dim**2 >= 1 << 20:
        return F.scaled_dot_product_attention(q, k, v)
    with torch.autocast("cpu", enabled=False):
        return F.scaled_dot_product_attention(q.float(), k.float(), v.float()).to(q.dtype)


class Attention(nn.Module):
    """Multi-head self-attention over the middle axis of (groups, length, hidden); fused qkv projection."""

    def __init__(self, hidden_size: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        G, L, D = x.shape
        # Splitting at the (3) axis in place makes the backward stack q/k/v grads straight into the (G, L, 3D)
        # layout of the qkv output (no extra permute copy); SDPA takes the strided (G, H, L, d) views as is.
        q, k, v = self.qkv(x).view(G, L, 3, self.num_heads, D // self.num_heads).unbind(2)  # (G, L, H, d) each
        out = attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))  # (G, H, L, d)
        return self.proj(out.transpose(1, 2).reshape(G, L, D))  # (G, L, D)


class LatteBlock(nn.Module):
    """DiT block with adaLN-Zero conditioning, attending within a frame (spatial) or across frames (temporal).

    The hidden state always stays in the (B, F, N, D) layout; only the attention input/output of a temporal
    block is regrouped, since every other operation is per token.
    """

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float, temporal: bool, gelu: str = "none"):
        super().__init__()
        self.temporal = temporal
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        # gelu "none" (exact) is within 5e-4 of the "tanh" approximation DiT and Latte use, and several times
        # faster on CPU; imported Latte weights take "tanh" to give the official outputs.
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio), act_layer=partial(nn.GELU, approximate=gelu))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        # x: (B, F, N, D), c: (B, D) or per frame (B, F, D)
        mod = per_frame(self.adaLN_modulation(c))  # (B, 1 or F, 1, 6D)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.chunk(6, dim=-1)
        h = modulate(self.norm1(x), shift_msa, scale_msa)  # (B, F, N, D)
        if self.temporal:
            # contiguous(): at B = 1 the regrouping is a mere view, and a strided matmul input costs ~1.7x.
            h = self.attn(rearrange(h, "b f n d -> (b n) f d").contiguous())  # (B*N, F, D)
            h = rearrange(h, "(b n) f d -> b f n d", b=x.shape[0])  # a strided view, laid out by the add below
        else:
            h = self.attn(h.flatten(0, 1)).view_as(x)  # attention over (B*F, N, D)
        x = torch.addcmul(x, gate_msa, h)
        h = self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))  # (B, F, N, D)
        return torch.addcmul(x, gate_mlp, h)


class FinalLayer(nn.Module):
    """adaLN-modulated LayerNorm and a linear map from tokens to patch pixels."""

    def __init__(self, hidden_size: int, patch_size: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        # x: (B, F, N, D), c: (B, D) or per frame (B, F, D)
        shift, scale = per_frame(self.adaLN_modulation(c)).chunk(2, dim=-1)  # (B, 1 or F, 1, D) each
        return self.linear(modulate(self.norm_final(x), shift, scale))  # (B, F, N, p*p*C_out)


class LabelEmbedder(nn.Module):
    """Class embedding table with an extra last row for the null class; drops labels for classifier-free guidance.

    Which labels are dropped is given by `force_drop_ids` (1 = drop), which training draws from its own keyed
    generator; without it a module in training mode draws them from torch's global RNG, as DiT does.
    """

    def __init__(self, num_classes: int, hidden_size: int, dropout_prob: float):
        super().__init__()
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob
        self.embedding_table = nn.Embedding(num_classes + 1, hidden_size)

    def forward(self, labels: torch.Tensor, force_drop_ids: torch.Tensor | None = None) -> torch.Tensor:
        if force_drop_ids is not None:
            labels = torch.where(force_drop_ids.to(labels.device) == 1, self.num_classes, labels)
        elif self.training and self.dropout_prob > 0:
            drop = torch.rand(labels.shape, device=labels.device) < self.dropout_prob
            labels = torch.where(drop, self.num_classes, labels)
        return self.embedding_table(labels)  # (B, D)
