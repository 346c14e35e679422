"""The Sapiens2 vision transformer (every official size, the 1b-4K variant, and any custom size)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from sapiens2.nn.block import TransformerBlock
from sapiens2.nn.patch_embed import PatchEmbed
from sapiens2.nn.rope import RopePositionEmbedding
from sapiens2.nn.tokenizer import WindowTokenizer


@dataclass(frozen=True)
class BackboneConfig:
    """Everything that shapes a Sapiens2 backbone. The official sizes are in `ARCHS`; tests use tiny ones."""

    embed_dim: int
    depth: int
    num_heads: int
    ffn_hidden: int | None = None  # None: 4 x embed_dim, exactly (Sapiens2 applies no 2/3 SwiGLU rule)
    num_tokenizer_layers: int = 2
    use_tokenizer: bool = False  # the 4K variant
    window_size: int = 4
    patch_size: int = 16
    in_channels: int = 3
    n_storage_tokens: int = 8
    qkv_bias: bool = True
    qk_norm: bool = True
    layer_scale: float = 1e-4
    rope_base: float = 100.0
    rope_dtype: torch.dtype = torch.bfloat16  # what every official model was trained with
    full_attention_first: int = 8  # blocks [0, first) and [depth - last, depth) use full multi-head attention;
    full_attention_last: int = 8  # the blocks between use heads // kv_group KV heads
    kv_group: int = 2

    @property
    def hidden(self) -> int:
        return self.ffn_hidden or 4 * self.embed_dim

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    def kv_heads(self, block: int) -> int:
        """KV heads of block `block`: grouped only away from the first and last few blocks."""
        full = block < self.full_attention_first or block >= self.depth - self.full_attention_last
        return self.num_heads if full else self.num_heads // self.kv_group


ARCHS: dict[str, BackboneConfig] = {
    "0.1b": BackboneConfig(embed_dim=768, depth=12, num_heads=12, num_tokenizer_layers=2),
    "0.4b": BackboneConfig(embed_dim=1024, depth=24, num_heads=16, num_tokenizer_layers=2),
    "0.8b": BackboneConfig(embed_dim=1280, depth=32, num_heads=16, num_tokenizer_layers=3),
    "1b": BackboneConfig(embed_dim=1536, depth=40, num_heads=24, num_tokenizer_layers=4),
    "5b": BackboneConfig(embed_dim=2432, depth=56, num_heads=32, num_tokenizer_layers=6),
}
ARCHS["1b-4k"] = replace(ARCHS["1b"], use_tokenizer=True)


class Sapiens2Backbone(nn.Module):
    """Patch embed -> (4K: window tokenizer) -> [cls | 8 storage | patches] -> blocks -> final RMSNorm.

    `forward` returns every token after the final norm, B x (1 + 8 + H*W) x C, as the reference's
    default `out_type="raw"`; `forward_featmap` returns the patch tokens as B x C x H x W, which is what
    the task heads read.
    """

    task = "pretrain"

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        cfg = config
        if cfg.embed_dim % (4 * cfg.num_heads):
            raise ValueError(f"embed_dim {cfg.embed_dim} must be divisible by 4 x num_heads ({cfg.num_heads})")
        self.config = cfg
        self.num_prefix_tokens = 1 + cfg.n_storage_tokens
        self.grad_checkpointing = False
        self.patch_embed = PatchEmbed(cfg.in_channels, cfg.embed_dim, cfg.patch_size)
        if cfg.use_tokenizer:
            self.tokenizer = WindowTokenizer(
                cfg.embed_dim, cfg.num_heads, cfg.hidden, cfg.num_tokenizer_layers, cfg.window_size
            )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))
        self.storage_tokens = nn.Parameter(torch.zeros(1, cfg.n_storage_tokens, cfg.embed_dim))
        self.rope_embed = RopePositionEmbedding(cfg.head_dim, cfg.rope_base, cfg.rope_dtype)
        self.blocks = nn.ModuleList(
            TransformerBlock(
                cfg.embed_dim, cfg.num_heads, cfg.hidden, num_kv_heads=cfg.kv_heads(i), qkv_bias=cfg.qkv_bias,
                qk_norm=cfg.qk_norm, layer_scale=cfg.layer_scale,
            )
            for i in range(cfg.depth)
        )
        self.ln1 = nn.RMSNorm(cfg.embed_dim, eps=1e-6)  # the final norm; the official key is top-level `ln1`

    def init_weights(self, std: float = 0.02) -> Sapiens2Backbone:
        """The reference's from-scratch init (for pretraining): truncated-normal Linear / Conv weights with zero
        biases, RMSNorm gains at 1, truncated-normal [cls], storage and 4K-tokenizer tokens; LayerScale keeps
        its constructor value. Loading a checkpoint does not need it."""
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.trunc_normal_(m.weight, std=std)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.RMSNorm) and m.weight is not None:
                nn.init.ones_(m.weight)
        tokens = [self.cls_token, self.storage_tokens]
        if self.config.use_tokenizer:
            tokens += [self.tokenizer.w_cls, self.tokenizer.local_pos_embed]
        for t in tokens:
            nn.init.trunc_normal_(t, std=std)
        return self

    def tokens(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> tuple[torch.Tensor, tuple[int, int]]:
        """All tokens after the final norm, and the patch grid (H, W) they came from.

        `keep` (B x n, patch indices in row-major grid order, after the 4K tokenizer when there is one)
        runs the blocks on those patches only, each keeping its own RoPE position: the masked encoder of
        MAE-style pretraining. The output then has 9 + n tokens.
        """
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(f"expected a B x {self.config.in_channels} x H x W image batch, got {tuple(x.shape)}")
        p = self.config.patch_size
        if x.shape[-2] < p or x.shape[-1] < p:
            raise ValueError(f"input {x.shape[-2]}x{x.shape[-1]} is smaller than one {p}x{p} patch")
        x, grid = self.patch_embed(x)
        gathered = False
        if self.config.use_tokenizer:
            x, grid = self.tokenizer(x, grid, keep)  # pools only the kept windows
            gathered = keep is not None
        b = x.shape[0]
        rope = self.rope_embed(*grid)
        if keep is not None:
            if not gathered:
                x = x.gather(1, keep[..., None].expand(-1, -1, x.shape[-1]))
            # Per-sample tables (B x 1 x n x d) broadcast over the heads.
            rope = tuple(t[keep][:, None] for t in rope)
        x = torch.cat((self.cls_token.expand(b, -1, -1), self.storage_tokens.expand(b, -1, -1), x), dim=1)
        use_ckpt = self.grad_checkpointing and self.training and torch.is_grad_enabled()
        for block in self.blocks:
            x = checkpoint(block, x, rope, use_reentrant=False) if use_ckpt else block(x, rope)
        return self.ln1(x), grid

    def forward(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        return self.tokens(x, keep)[0]

    def forward_featmap(self, x: torch.Tensor) -> torch.Tensor:
        """Patch tokens as a B x C x H x W feature map (prefix tokens dropped)."""
        tokens, (h, w) = self.tokens(x)
        patches = tokens[:, self.num_prefix_tokens :]
        return patches.reshape(patches.shape[0], h, w, -1).permute(0, 3, 1, 2)
