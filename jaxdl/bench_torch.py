"""PyTorch counterparts of the zoo models that ``jaxdl bench`` times, written by hand (torchvision is not a dependency).

Each builder takes the same sizes as the jaxdl model it mirrors and returns an ``nn.Module`` with the same layers
and the same number of trainable parameters (``jaxdl.bench`` asserts the counts agree). Images are NCHW here (PyTorch's
layout); jaxdl's models read NHWC. Initialisation is PyTorch's default: the benchmark compares speed, not values.

``torch_gpt`` is the GPT of ``scripts/bench_transformer.py`` too (its key/value cache serves that script's generation
section). Importing this module imports torch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def count(net: nn.Module) -> int:
    """Trainable parameters of ``net`` (buffers such as batch-norm running statistics are not parameters)."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


# --------------------------------------------------------------------------------------------------------------------
# Image classifiers
# --------------------------------------------------------------------------------------------------------------------


def mlp(in_features: int, widths: tuple[int, ...], classes: int) -> nn.Module:
    """Flatten → [Linear → ReLU] × len(widths) → Linear, as ``jaxdl.models.mlp.MLP``."""
    layers, prev = [nn.Flatten()], in_features
    for w in widths:
        layers += [nn.Linear(prev, w), nn.ReLU()]
        prev = w
    return nn.Sequential(*layers, nn.Linear(prev, classes))


def lenet5(channels: int, classes: int, activation: str = "relu", pool: str = "max") -> nn.Module:
    """LeNet-5 on 32×32 inputs: conv 5×5 (6) → pool → conv 5×5 (16) → pool → 120 → 84 → classes."""
    act = nn.ReLU if activation == "relu" else nn.Tanh
    pooling = nn.MaxPool2d if pool == "max" else nn.AvgPool2d
    return nn.Sequential(nn.Conv2d(channels, 6, 5), act(), pooling(2, 2), nn.Conv2d(6, 16, 5), act(), pooling(2, 2),
                         nn.Flatten(), nn.Linear(400, 120), act(), nn.Linear(120, 84), act(), nn.Linear(84, classes))


class _ResBlock(nn.Module):
    def __init__(self, kind: str, inplanes: int, planes: int, stride: int):
        super().__init__()
        self.kind, out = kind, planes * (1 if kind == "basic" else 4)
        if kind == "basic":
            self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        else:
            self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
            self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(out)
        self.bn1, self.bn2 = nn.BatchNorm2d(planes), nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x):
        o = F.relu(self.bn1(self.conv1(x)))
        o = self.bn2(self.conv2(o))
        if self.kind == "bottleneck":
            o = self.bn3(self.conv3(F.relu(o)))
        return F.relu(o + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    """torchvision's ResNet v1.5 with ``jaxdl.models.resnet``'s ``width`` multiplier and ``cifar`` stem option."""

    def __init__(self, depth: int, width: float, stem: str, channels: int, classes: int):
        super().__init__()
        from jaxdl.models.resnet import LAYOUTS, stage_widths  # the same table the jaxdl model reads

        kind, blocks = LAYOUTS[depth]
        widths = stage_widths(width)
        self.stem = stem
        k, s, p = (7, 2, 3) if stem == "imagenet" else (3, 1, 1)
        self.conv1 = nn.Conv2d(channels, widths[0], k, s, p, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        inplanes, layers = widths[0], []
        for i, (planes, n) in enumerate(zip(widths, blocks)):
            stage = []
            for j in range(n):
                stage.append(_ResBlock(kind, inplanes, planes, 2 if i > 0 and j == 0 else 1))
                inplanes = planes * (1 if kind == "basic" else 4)
            layers.append(nn.Sequential(*stage))
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(inplanes, classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        if self.stem == "imagenet":
            x = F.max_pool2d(x, 3, 2, 1)
        return self.fc(self.layers(x).mean(dim=(2, 3)))


class VGG(nn.Module):
    """torchvision's VGG (no batch norm): 3×3 convs and 2×2 max-pools, adaptive pool to 7×7, 4096-4096 classifier."""

    def __init__(self, depth: int, channels: int, classes: int, dropout: float = 0.0):
        super().__init__()
        from jaxdl.models.vgg import LAYOUTS

        layers, prev = [], channels
        for v in LAYOUTS[depth]:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(prev, int(v), 3, padding=1), nn.ReLU()]
                prev = int(v)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Linear(512 * 49, 4096), nn.ReLU(), nn.Dropout(dropout),
                                        nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(dropout),
                                        nn.Linear(4096, classes))

    def forward(self, x):
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 7), 1))


class _MBConv(nn.Module):
    def __init__(self, expand: int, kernel: int, stride: int, cin: int, cout: int):
        super().__init__()
        from jaxdl.models.efficientnet import _make_divisible

        hidden = _make_divisible(cin * expand, 8)
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.SiLU()]
        layers += [nn.Conv2d(hidden, hidden, kernel, stride, (kernel - 1) // 2, groups=hidden, bias=False),
                   nn.BatchNorm2d(hidden), nn.SiLU()]
        self.block = nn.Sequential(*layers)
        squeeze = max(1, cin // 4)
        self.se_reduce, self.se_expand = nn.Conv2d(hidden, squeeze, 1), nn.Conv2d(squeeze, hidden, 1)
        self.project = nn.Sequential(nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        h = self.block(x)
        s = torch.sigmoid(self.se_expand(F.silu(self.se_reduce(h.mean(dim=(2, 3), keepdim=True)))))
        h = self.project(h * s)
        return h + x if self.residual else h  # stochastic depth off (drop_connect 0 on both sides)


class EfficientNet(nn.Module):
    """torchvision's EfficientNet B series from ``jaxdl.models.efficientnet.architecture`` (the same block list)."""

    def __init__(self, variant: str, channels: int, classes: int):
        super().__init__()
        from jaxdl.models.efficientnet import architecture

        stem, blocks, head = architecture(variant)
        self.stem = nn.Sequential(nn.Conv2d(channels, stem, 3, 2, 1, bias=False), nn.BatchNorm2d(stem), nn.SiLU())
        self.blocks = nn.Sequential(*(_MBConv(b.expand, b.kernel, b.stride, b.in_channels, b.out_channels)
                                      for b in blocks))
        last = blocks[-1].out_channels
        self.head = nn.Sequential(nn.Conv2d(last, head, 1, bias=False), nn.BatchNorm2d(head), nn.SiLU())
        self.classifier = nn.Linear(head, classes)

    def forward(self, x):
        return self.classifier(self.head(self.blocks(self.stem(x))).mean(dim=(2, 3)))


class LSTMClassifier(nn.Module):
    """``jaxdl.models.rnn_classifier`` with ``pooling="last"``: an image (B, H, W) read row by row."""

    def __init__(self, features: int, hidden: int, layers: int, classes: int):
        super().__init__()
        self.rnn = nn.LSTM(features, hidden, layers, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x):
        out, _ = self.rnn(x.flatten(2))  # (B, T, hidden)
        return self.head(out[:, -1])


# --------------------------------------------------------------------------------------------------------------------
# Transformers
# --------------------------------------------------------------------------------------------------------------------


def torch_gpt(m: dict[str, int], vocab: int):
    """A GPT-2-style PyTorch module with jaxdl's ``DecoderLM`` layout; ``forward(idx, cache=None, pos=0)`` returns
    logits (B, T, V); with ``cache`` (a list of per-layer (K, V) buffers (B, H, L, Dh)) it writes the new keys and
    values at ``pos`` and attends over positions ``[0, pos + T)``. ``m``: ``layers``, ``d_model``, ``heads``,
    ``context``."""
    from jaxdl.nn.transformer import LAYER_NORM_EPS

    eps, d, h = LAYER_NORM_EPS["gpt2"], m["d_model"], m["heads"]

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.ln_2 = nn.LayerNorm(d, eps=eps), nn.LayerNorm(d, eps=eps)
            self.qkv, self.out = nn.Linear(d, 3 * d), nn.Linear(d, d)  # q, k, v fused as in GPT-2's c_attn
            self.fc_in, self.fc_out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

        def forward(self, x, cache, pos):
            B, T, _ = x.shape
            q, k, v = self.qkv(self.ln_1(x)).split(d, dim=-1)  # 3 x (B, T, D)
            q, k, v = (t.view(B, T, h, d // h).transpose(1, 2) for t in (q, k, v))  # (B, H, T, Dh)
            if cache is None:
                a = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, Dh)
            else:
                kc, vc = cache
                kc[:, :, pos:pos + T], vc[:, :, pos:pos + T] = k, v
                keys, values = kc[:, :, :pos + T], vc[:, :, :pos + T]  # (B, H, pos + T, Dh)
                # new query i (position pos + i) sees keys 0 … pos + i
                mask = None if T == 1 else (torch.arange(pos + T)[None, :] <= pos + torch.arange(T)[:, None])
                a = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)  # (B, H, T, Dh)
            x = x + self.out(a.transpose(1, 2).reshape(B, T, d))  # (B, T, D)
            return x + self.fc_out(F.gelu(self.fc_in(self.ln_2(x)), approximate="tanh"))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(m["context"], d)
            self.blocks = nn.ModuleList(Block() for _ in range(m["layers"]))
            self.ln_f = nn.LayerNorm(d, eps=eps)

        def forward(self, idx, cache=None, pos: int = 0):
            T = idx.shape[1]
            x = self.wte(idx) + self.wpe(torch.arange(pos, pos + T))  # (B, T, D)
            for i, block in enumerate(self.blocks):
                x = block(x, None if cache is None else cache[i], pos)
            return self.ln_f(x) @ self.wte.weight.T  # (B, T, V): tied embeddings

        def new_cache(self, batch: int, length: int):
            shape = (batch, h, length, d // h)  # (B, H, L, Dh)
            return [(torch.zeros(shape), torch.zeros(shape)) for _ in self.blocks]

    return GPT()


class _BertLayer(nn.Module):
    def __init__(self, d: int, heads: int, ffn: int, eps: float):
        super().__init__()
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)  # q, k, v, out with biases
        self.attn_norm, self.out_norm = nn.LayerNorm(d, eps=eps), nn.LayerNorm(d, eps=eps)
        self.fc_in, self.fc_out = nn.Linear(d, ffn), nn.Linear(ffn, d)

    def forward(self, x):
        x = self.attn_norm(x + self.attn(x, x, x, need_weights=False)[0])  # post-LN
        return self.out_norm(x + self.fc_out(F.gelu(self.fc_in(x))))


class BertMLM(nn.Module):
    """BERT (post-LN, learned positions, token types) with the masked-LM head tied to the word embeddings."""

    def __init__(self, vocab: int, positions: int, d: int, layers: int, heads: int, ffn: int, eps: float = 1e-12):
        super().__init__()
        self.word, self.pos, self.types = nn.Embedding(vocab, d), nn.Embedding(positions, d), nn.Embedding(2, d)
        self.norm = nn.LayerNorm(d, eps=eps)
        self.layers = nn.ModuleList(_BertLayer(d, heads, ffn, eps) for _ in range(layers))
        self.transform, self.mlm_norm = nn.Linear(d, d), nn.LayerNorm(d, eps=eps)
        self.mlm_bias = nn.Parameter(torch.zeros(vocab))

    def forward(self, tokens):
        T = tokens.shape[1]
        x = self.norm(self.word(tokens) + self.pos(torch.arange(T))[None] + self.types(torch.zeros_like(tokens)))
        for layer in self.layers:
            x = layer(x)
        h = self.mlm_norm(F.gelu(self.transform(x)))
        return h @ self.word.weight.T + self.mlm_bias  # (B, T, V)


class _RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float = 1e-6):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(d)), eps

    def forward(self, x):
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)


class _T5Attention(nn.Module):
    def __init__(self, d: int, heads: int, d_kv: int):
        super().__init__()
        self.h, self.dk = heads, d_kv
        inner = heads * d_kv
        self.q, self.k, self.v = (nn.Linear(d, inner, bias=False) for _ in range(3))
        self.o = nn.Linear(inner, d, bias=False)

    def forward(self, x, kv, bias=None, mask=None):
        B, T, _ = x.shape
        S = kv.shape[1]
        q = self.q(x).view(B, T, self.h, self.dk).transpose(1, 2)  # (B, H, T, dk)
        k = self.k(kv).view(B, S, self.h, self.dk).transpose(1, 2)  # (B, H, S, dk)
        v = self.v(kv).view(B, S, self.h, self.dk).transpose(1, 2)
        scores = q @ k.transpose(-1, -2)  # (B, H, T, S): T5 does not scale by 1/sqrt(dk)
        if bias is not None:
            scores = scores + bias
        if mask is not None:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        a = torch.softmax(scores, -1) @ v  # (B, H, T, dk)
        return self.o(a.transpose(1, 2).reshape(B, T, self.h * self.dk))


def _t5_buckets(rel: torch.Tensor, bidirectional: bool, buckets: int, max_distance: int) -> torch.Tensor:
    """T5's relative-position buckets (half exact, half log-spaced up to ``max_distance``)."""
    out = torch.zeros_like(rel)
    if bidirectional:
        buckets //= 2
        out = out + (rel > 0).long() * buckets
        rel = rel.abs()
    else:
        rel = -torch.clamp(rel, max=0)
    exact = buckets // 2
    large = exact + (torch.log(rel.float().clamp(min=1) / exact) / math.log(max_distance / exact)
                     * (buckets - exact)).long()
    large = torch.clamp(large, max=buckets - 1)
    return out + torch.where(rel < exact, rel, large)


class _T5Stack(nn.Module):
    def __init__(self, d, heads, d_kv, d_ff, layers, buckets, max_distance, decoder):
        super().__init__()
        self.decoder, self.buckets, self.max_distance = decoder, buckets, max_distance
        self.rel = nn.Embedding(buckets, heads)
        self.blocks = nn.ModuleList()
        for _ in range(layers):
            blk = nn.ModuleDict({"sa": _T5Attention(d, heads, d_kv), "sa_norm": _RMSNorm(d),
                                 "wi": nn.Linear(d, d_ff, bias=False), "wo": nn.Linear(d_ff, d, bias=False),
                                 "ff_norm": _RMSNorm(d)})
            if decoder:
                blk["ca"], blk["ca_norm"] = _T5Attention(d, heads, d_kv), _RMSNorm(d)
            self.blocks.append(blk)
        self.final_norm = _RMSNorm(d)

    def forward(self, x, mask, encoded=None, encoded_mask=None):
        T = x.shape[1]
        pos = torch.arange(T)
        rel = _t5_buckets(pos[None, :] - pos[:, None], not self.decoder, self.buckets, self.max_distance)
        bias = self.rel(rel).permute(2, 0, 1)[None]  # (1, H, T, T)
        self_mask = mask if not self.decoder else torch.ones(T, T, dtype=torch.bool).tril()[None, None]
        for blk in self.blocks:
            h = blk["sa_norm"](x)
            x = x + blk["sa"](h, h, bias, self_mask)
            if self.decoder:
                x = x + blk["ca"](blk["ca_norm"](x), encoded, None, encoded_mask)
            x = x + blk["wo"](F.relu(blk["wi"](blk["ff_norm"](x))))
        return self.final_norm(x)


class T5(nn.Module):
    """T5 v1.0 (relu feed-forward, tied head scaled by d^-1/2), as ``jaxdl.models.t5``."""

    def __init__(self, vocab, d, d_kv, d_ff, layers, heads, buckets=32, max_distance=128):
        super().__init__()
        self.d = d
        self.shared = nn.Embedding(vocab, d)
        self.encoder = _T5Stack(d, heads, d_kv, d_ff, layers, buckets, max_distance, False)
        self.decoder = _T5Stack(d, heads, d_kv, d_ff, layers, buckets, max_distance, True)

    def forward(self, source, source_mask, target_in):
        mask = source_mask.bool()[:, None, None, :]  # (B, 1, 1, S)
        encoded = self.encoder(self.shared(source), mask)
        y = self.decoder(self.shared(target_in), None, encoded, mask)
        return (y * self.d ** -0.5) @ self.shared.weight.T  # (B, T, V)


# --------------------------------------------------------------------------------------------------------------------
# Diffusion U-Net
# --------------------------------------------------------------------------------------------------------------------


class _UResBlock(nn.Module):
    def __init__(self, cin: int, out: int, temb: int, groups: int):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(groups, cin), nn.Conv2d(cin, out, 3, padding=1)
        self.time = nn.Linear(temb, out)
        self.norm2, self.conv2 = nn.GroupNorm(groups, out), nn.Conv2d(out, out, 3, padding=1)
        self.skip = nn.Conv2d(cin, out, 1) if cin != out else None

    def forward(self, h, temb):
        y = self.conv1(F.silu(self.norm1(h))) + self.time(F.silu(temb))[:, :, None, None]
        y = self.conv2(F.silu(self.norm2(y)))
        return (h if self.skip is None else self.skip(h)) + y


class _UAttention(nn.Module):
    def __init__(self, c: int, heads: int, groups: int):
        super().__init__()
        self.norm, self.attn = nn.GroupNorm(groups, c), nn.MultiheadAttention(c, heads, batch_first=True)

    def forward(self, h):
        B, C, H, W = h.shape
        y = self.norm(h).flatten(2).transpose(1, 2)  # (B, HW, C)
        y = self.attn(y, y, y, need_weights=False)[0]
        return h + y.transpose(1, 2).reshape(B, C, H, W)


class UNet(nn.Module):
    """``jaxdl.models.unet.UNet`` (unconditional): time MLP, residual blocks, attention levels, skip connections."""

    def __init__(self, in_channels: int, channels: tuple[int, ...], blocks: int, attention_levels: tuple[int, ...],
                 heads: int, groups: int):
        super().__init__()
        self.channels, self.blocks, self.levels = channels, blocks, set(attention_levels)
        c0, width = channels[0], 4 * channels[0]
        self.time_mlp1, self.time_mlp2 = nn.Linear(c0, width), nn.Linear(width, width)
        self.conv_in = nn.Conv2d(in_channels, c0, 3, padding=1)
        mods, skips, prev = nn.ModuleDict(), [c0], c0
        last = len(channels) - 1
        for i, ch in enumerate(channels):
            for b in range(blocks):
                mods[f"down{i}_res{b}"] = _UResBlock(prev, ch, width, groups)
                prev = ch
                if i in self.levels:
                    mods[f"down{i}_attn{b}"] = _UAttention(ch, heads, groups)
                skips.append(ch)
            if i < last:
                mods[f"down{i}_sample"] = nn.Conv2d(ch, ch, 3, 2, 1)
                skips.append(ch)
        mods["mid_res0"] = _UResBlock(prev, channels[-1], width, groups)
        mods["mid_attn"] = _UAttention(channels[-1], heads, groups)
        mods["mid_res1"] = _UResBlock(channels[-1], channels[-1], width, groups)
        prev = channels[-1]
        for i in reversed(range(len(channels))):
            ch = channels[i]
            for b in range(blocks + 1):
                mods[f"up{i}_res{b}"] = _UResBlock(prev + skips.pop(), ch, width, groups)
                prev = ch
                if i in self.levels:
                    mods[f"up{i}_attn{b}"] = _UAttention(ch, heads, groups)
            if i > 0:
                mods[f"up{i}_sample"] = nn.Conv2d(ch, channels[i - 1], 3, padding=1)
                prev = channels[i - 1]
        self.mods = mods
        self.norm_out, self.conv_out = nn.GroupNorm(groups, prev), nn.Conv2d(prev, in_channels, 3, padding=1)

    def forward(self, x, t):
        c0 = self.channels[0]
        half = c0 // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
        angles = t.float()[:, None] * freqs[None]
        temb = self.time_mlp2(F.silu(self.time_mlp1(torch.cat([torch.sin(angles), torch.cos(angles)], -1))))
        h = self.conv_in(x)
        skips, m, last = [h], self.mods, len(self.channels) - 1
        for i in range(len(self.channels)):
            for b in range(self.blocks):
                h = m[f"down{i}_res{b}"](h, temb)
                if i in self.levels:
                    h = m[f"down{i}_attn{b}"](h)
                skips.append(h)
            if i < last:
                h = m[f"down{i}_sample"](h)
                skips.append(h)
        h = m["mid_res1"](m["mid_attn"](m["mid_res0"](h, temb)), temb)
        for i in reversed(range(len(self.channels))):
            for b in range(self.blocks + 1):
                h = m[f"up{i}_res{b}"](torch.cat([h, skips.pop()], 1), temb)
                if i in self.levels:
                    h = m[f"up{i}_attn{b}"](h)
            if i > 0:
                size = skips[-1].shape[2:]
                h = m[f"up{i}_sample"](F.interpolate(h, scale_factor=2, mode="nearest")[:, :, :size[0], :size[1]])
        return self.conv_out(F.silu(self.norm_out(h)))
