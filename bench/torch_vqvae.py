r"""A PyTorch VQ-VAE of the same architecture as our `cifar10` config, as a speed baseline.

Our own code (not a package's): the Sonnet / `vqvae_tf` network (two stride-2 4x4 convolutions,
a 3x3 convolution, 2 residual blocks of ReLU-3x3-ReLU-1x1, a 1x1 projection to D; the mirror with
transposed convolutions), an EMA quantizer (decay 0.99, Laplace-smoothed cluster sizes), the MSE
loss over the data variance plus beta times the commitment loss, and Adam. Only torch is needed
(``pip install -r bench/requirements-torch.txt``); nothing in the library or its tests imports it.

    python -m bench.torch_vqvae [--threads=2] [--steps=20]     # prints images/s as JSON
"""

from __future__ import annotations

import argparse
import json
import time


def build(num_hiddens=128, num_residual_hiddens=32, num_residual_layers=2, num_embeddings=512, embedding_dim=64):
    import torch
    from torch import nn

    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList(
                nn.Sequential(
                    nn.ReLU(),
                    nn.Conv2d(num_hiddens, num_residual_hiddens, 3, padding=1),
                    nn.ReLU(),
                    nn.Conv2d(num_residual_hiddens, num_hiddens, 1),
                )
                for _ in range(num_residual_layers)
            )

        def forward(self, x):
            for block in self.blocks:
                x = x + block(x)
            return torch.relu(x)

    class VQVAE(nn.Module):
        def __init__(self):
            super().__init__()
            h = num_hiddens
            self.encoder = nn.Sequential(
                nn.Conv2d(3, h // 2, 4, 2, 1),
                nn.ReLU(),
                nn.Conv2d(h // 2, h, 4, 2, 1),
                nn.ReLU(),
                nn.Conv2d(h, h, 3, padding=1),
                Residual(),
                nn.Conv2d(h, embedding_dim, 1),
            )
            self.decoder = nn.Sequential(
                nn.Conv2d(embedding_dim, h, 3, padding=1),
                Residual(),
                nn.ConvTranspose2d(h, h // 2, 4, 2, 1),
                nn.ReLU(),
                nn.ConvTranspose2d(h // 2, 3, 4, 2, 1),
            )
            self.register_buffer("codebook", torch.randn(num_embeddings, embedding_dim))
            self.register_buffer("cluster_size", torch.zeros(num_embeddings))
            self.register_buffer("sums", self.codebook.clone())

        def forward(self, x, decay=0.99, eps=1e-5):
            z = self.encoder(x - 0.5)
            flat = z.permute(0, 2, 3, 1).reshape(-1, embedding_dim)
            d = (flat**2).sum(1, keepdim=True) - 2 * flat @ self.codebook.t() + (self.codebook**2).sum(1)
            idx = d.argmin(1)
            onehot = torch.nn.functional.one_hot(idx, num_embeddings).type(flat.dtype)
            quantized = self.codebook[idx].view(z.shape[0], z.shape[2], z.shape[3], -1).permute(0, 3, 1, 2)
            if self.training:  # the EMA codebook update, as VectorQuantizerEMA's
                with torch.no_grad():
                    self.cluster_size.mul_(decay).add_(onehot.sum(0), alpha=1 - decay)
                    self.sums.mul_(decay).add_(onehot.t() @ flat, alpha=1 - decay)
                    n = self.cluster_size.sum()
                    size = (self.cluster_size + eps) / (n + num_embeddings * eps) * n
                    self.codebook.copy_(self.sums / size[:, None])
            commitment = ((z - quantized.detach()) ** 2).mean()
            z_q = z + (quantized - z).detach()
            return self.decoder(z_q) + 0.5, commitment

    return VQVAE()


def measure(threads: int, steps: int, batch: int = 128, warmup: int = 3, seed: int = 0) -> dict:
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = build()
    optimizer = torch.optim.Adam(model.parameters(), 1e-4)
    images = torch.rand(batch, 3, 32, 32)

    def step():
        optimizer.zero_grad(set_to_none=True)
        recon, commitment = model(images)
        loss = ((recon - images) ** 2).mean() / 0.06 + 0.25 * commitment
        loss.backward()
        optimizer.step()
        return loss

    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        loss = step()
    float(loss)
    seconds = (time.perf_counter() - start) / steps
    return {
        "framework": f"torch {torch.__version__}",
        "threads": threads,
        "batch": batch,
        "seconds_per_step": seconds,
        "images_per_second": batch / seconds,
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    print(json.dumps(measure(args.threads, args.steps)))


if __name__ == "__main__":
    main()
