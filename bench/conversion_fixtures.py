r"""Makes the parity fixtures of the checkpoint converter (tests/fixtures/conversion/), once, with
the reference implementations: diffusers' `VQModel` and the PyPI taming-transformers package's
Encoder, Decoder and VectorQuantizer. CI's tests read the files without importing torch.

Runs in its own venv (never the library's):
    python3 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install -r bench/requirements-torch.txt
    /tmp/torchvenv/bin/pip install --no-deps taming-transformers==0.0.1
    /tmp/torchvenv/bin/python -m bench.conversion_fixtures

Each fixture is a small model of one configuration with every weight perturbed (GroupNorm scales
and biases away from 1 and 0, every bias nonzero, the codebook drawn from the encoder's latents
so that codes are diverse), saved in its source format, and expected.npz: the input images (real
clip art, uint8 [B,32,32,3]), the latents after quant_conv (NHWC), the code indices [B,h,w] and
the decoding of those codes mapped from [-1, 1] to [0, 1] and clipped (NHWC).
"""

from __future__ import annotations

import glob
import json
import os
import shutil

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "fixtures", "conversion")
CLIPART = "/usr/share/openclipart/png"
SIZE = 32

# diffusers VQModel configurations: attention in the encoder's last level and the decoder's first,
# vq_embed_dim unlike latent_channels; and MoVQ's spatial norm with two ResNet layers per block,
# no mid attention, codes looked up from the codebook.
DIFFUSERS = {
    "diffusers_attention": dict(
        block_out_channels=[16, 32],
        down_block_types=["DownEncoderBlock2D", "AttnDownEncoderBlock2D"],
        up_block_types=["AttnUpDecoderBlock2D", "UpDecoderBlock2D"],
        layers_per_block=1,
        latent_channels=4,
        vq_embed_dim=3,
        num_vq_embeddings=64,
        norm_num_groups=8,
    ),
    "diffusers_movq": dict(
        block_out_channels=[32, 32, 32],
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["AttnUpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
        layers_per_block=2,
        latent_channels=4,
        num_vq_embeddings=48,
        norm_num_groups=16,
        norm_type="spatial",
        mid_block_add_attention=False,
        lookup_from_codebook=True,
    ),
}
TAMING = dict(
    embed_dim=4,
    n_embed=64,
    ddconfig=dict(
        double_z=False,
        z_channels=4,
        resolution=SIZE,
        in_channels=3,
        out_ch=3,
        ch=32,
        ch_mult=[1, 2],
        num_res_blocks=1,
        attn_resolutions=[16],
        dropout=0.0,
    ),
)


def clipart_images(n: int = 4) -> np.ndarray:
    """n real clip-art images, RGBA composited on white, resized to SIZE: uint8 [n, SIZE, SIZE, 3]."""
    from PIL import Image

    paths = sorted(glob.glob(os.path.join(CLIPART, "**", "*.png"), recursive=True))[::997][:n]
    out = []
    for path in paths:
        im = Image.open(path).convert("RGBA")
        canvas = Image.new("RGBA", im.size, (255, 255, 255, 255))
        canvas.alpha_composite(im)
        out.append(np.asarray(canvas.convert("RGB").resize((SIZE, SIZE), Image.BILINEAR)))
    return np.stack(out)


def perturb(module, torch) -> None:
    """Every weight away from its initial value: GroupNorm scales ~1 +- 0.3, biases +- 0.2."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if isinstance(dict(module.named_modules()).get(name.rsplit(".", 1)[0]), torch.nn.GroupNorm):
                p.copy_((1.0 + 0.3 * noise) if name.endswith("weight") else 0.2 * noise)
            elif name.endswith("bias"):
                p.copy_(0.1 * noise)
            else:
                p.mul_(1.0 + 0.2 * noise)


def codebook_from(latents, k: int, torch):
    """K rows drawn from the latents (NCHW) with a little noise: the codebook at their scale."""
    g = torch.Generator().manual_seed(1)
    flat = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
    rows = flat[torch.randint(0, flat.shape[0], (k,), generator=g)]
    return rows + 0.05 * flat.std() * torch.randn(rows.shape, generator=g)


def expected(images, latents, codes, decoded) -> dict:
    return dict(
        images=images,
        latents=latents.permute(0, 2, 3, 1).numpy().astype(np.float32),
        codes=codes.numpy().astype(np.int32),
        decoded=((decoded.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).numpy().astype(np.float32),
    )


def make_diffusers(name: str, options: dict, images: np.ndarray, torch) -> None:
    from diffusers import VQModel

    torch.manual_seed(0)
    model = VQModel(in_channels=3, out_channels=3, sample_size=SIZE, **options).eval()
    perturb(model, torch)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0 * 2 - 1
    with torch.no_grad():
        latents = model.encode(x).latents
        model.quantize.embedding.weight.copy_(codebook_from(latents, options["num_vq_embeddings"], torch))
        b, c, h, w = latents.shape
        codes = model.quantize(latents)[2][2].reshape(b, h, w)
        if model.config.lookup_from_codebook:
            decoded = model.decode(codes.reshape(-1), force_not_quantize=True, shape=(b, h, w, c)).sample
        else:
            quant = model.quantize.get_codebook_entry(codes.reshape(-1), (b, h, w, c))
            decoded = model.decode(quant, force_not_quantize=True).sample
    directory = os.path.join(OUT, name)
    model.save_pretrained(directory)
    np.savez_compressed(os.path.join(directory, "expected.npz"), **expected(images, latents, codes, decoded))
    if name == "diffusers_attention":  # the same weights under the pre-0.14 attention names
        legacy(directory, os.path.join(OUT, "diffusers_legacy_names"))


def legacy(src: str, dst: str) -> None:
    """A copy of the diffusers folder `src` whose attention weights carry the old names
    (query/key/value/proj_attn), which diffusers still converts on load."""
    from safetensors.numpy import load_file, save_file

    weights = load_file(os.path.join(src, "diffusion_pytorch_model.safetensors"))
    renames = {".to_q.": ".query.", ".to_k.": ".key.", ".to_v.": ".value.", ".to_out.0.": ".proj_attn."}
    out = {}
    for key, value in weights.items():
        for new, old in renames.items():
            key = key.replace(new, old)
        out[key] = value
    os.makedirs(dst, exist_ok=True)
    save_file(out, os.path.join(dst, "diffusion_pytorch_model.safetensors"))
    for name in ("config.json", "expected.npz"):
        shutil.copy(os.path.join(src, name), dst)


def make_taming(images: np.ndarray, torch) -> None:
    import yaml
    from taming.modules.diffusionmodules.model import Decoder, Encoder
    from taming.modules.vqvae.quantize import VectorQuantizer

    torch.manual_seed(0)
    dd = TAMING["ddconfig"]
    model = torch.nn.Module()
    model.encoder = Encoder(**dd)
    model.decoder = Decoder(**dd)
    model.quantize = VectorQuantizer(TAMING["n_embed"], TAMING["embed_dim"], beta=0.25)
    model.quant_conv = torch.nn.Conv2d(dd["z_channels"], TAMING["embed_dim"], 1)
    model.post_quant_conv = torch.nn.Conv2d(TAMING["embed_dim"], dd["z_channels"], 1)
    model.eval()
    perturb(model, torch)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0 * 2 - 1
    with torch.no_grad():
        latents = model.quant_conv(model.encoder(x))
        model.quantize.embedding.weight.copy_(codebook_from(latents, TAMING["n_embed"], torch))
        b, c, h, w = latents.shape
        codes = model.quantize(latents)[2][2].reshape(b, h, w)
        quant = model.quantize.get_codebook_entry(codes.reshape(-1), (b, h, w, c))
        decoded = model.decoder(model.post_quant_conv(quant))
    directory = os.path.join(OUT, "taming")
    os.makedirs(directory, exist_ok=True)
    state = dict(model.state_dict())
    state["loss.discriminator.main.0.weight"] = torch.zeros(8, 3, 4, 4)  # ignored by the converter
    torch.save({"state_dict": state, "global_step": 7, "epoch": 1}, os.path.join(directory, "last.ckpt"))
    config = {
        "model": {
            "base_learning_rate": 4.5e-6,
            "target": "taming.models.vqgan.VQModel",
            "params": {
                **TAMING,
                "lossconfig": {"target": "taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator"},
            },
        }
    }
    with open(os.path.join(directory, "model.yaml"), "w") as f:
        yaml.safe_dump(config, f)
    np.savez_compressed(os.path.join(directory, "expected.npz"), **expected(images, latents, codes, decoded))


def main() -> None:
    import diffusers
    import torch

    images = clipart_images()
    for name, options in DIFFUSERS.items():
        make_diffusers(name, options, images, torch)
    make_taming(images, torch)
    with open(os.path.join(OUT, "PROVENANCE.json"), "w") as f:
        json.dump(
            {
                "command": "python -m bench.conversion_fixtures",
                "torch": torch.__version__,
                "diffusers": diffusers.__version__,
                "taming-transformers": "0.0.1",
                "images": f"openclipart-png, every 997th file of {CLIPART}/**/*.png (sorted), RGBA on white, {SIZE}x{SIZE}",
            },
            f,
            indent=2,
        )
    print(f"Wrote {OUT}")


if __name__ == "__main__":
    main()
