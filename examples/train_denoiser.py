"""Train a small 3-D U-Net denoiser on cubes streamed from the priors, and measure it.

    python examples/train_denoiser.py [--minutes 3] [--device cuda]

Cubes come from `galcubecraft.dataset.StreamingCubes` in batches (on the GPU with
``--device cuda``: rendered, observed and served there); the script reports

* the data rate (cubes/s that the stream serves alone) against the training rate (cubes/s
  that the optimiser consumes alone), so you can see which one bounds the loop;
* on held-out cubes (indices the training never sees), the rms of the error against the clean
  cube before (the noise) and after denoising, inside the emission mask and everywhere: the
  denoiser's gain in S/N is their ratio.

``--toy`` runs it at a size the CPU in CI takes in seconds.
"""
import argparse
import time

import torch

from galcubecraft.dataset import StreamingCubes

PRIORS = {
    "dataset": {"seed": 3},
    "grid": {"shape": [32, 64, 64], "pixel_scale": "1 arcsec", "channel_width": "20 km/s",
             "beam": "3 arcsec"},
    "noise": {"peak_snr": {"distribution": "loguniform", "low": 3, "high": 20}},
    "scene": {"n_galaxies": {"distribution": "choice", "values": [1, 2]}},
    "galaxy": {"r_eff": {"distribution": "loguniform", "low": "1.5 arcsec", "high": "5 arcsec"},
               "v_max": {"distribution": "uniform", "low": "80 km/s", "high": "250 km/s"}},
}
TOY = {**PRIORS, "grid": {**PRIORS["grid"], "shape": [16, 16, 16], "channel_width": "40 km/s"},
       "galaxy": {**PRIORS["galaxy"], "r_eff": "2 arcsec", "v_max": "120 km/s"}}
#: Held-out cubes start here; training cubes below it.
HELD_OUT = 10**9


class UNet3D(torch.nn.Module):
    """Two levels: conv blocks, one 2x down/up-sampling, a skip connection; the output is a
    correction added to the input (the network learns the noise)."""

    def __init__(self, width=16):
        super().__init__()

        def block(c_in, c_out):
            return torch.nn.Sequential(torch.nn.Conv3d(c_in, c_out, 3, padding=1),
                                       torch.nn.GELU(),
                                       torch.nn.Conv3d(c_out, c_out, 3, padding=1),
                                       torch.nn.GELU())
        self.down, self.bottom = block(1, width), block(width, 2 * width)
        self.up = torch.nn.ConvTranspose3d(2 * width, width, 2, stride=2)
        self.out = torch.nn.Sequential(block(2 * width, width), torch.nn.Conv3d(width, 1, 1))

    def forward(self, x):
        skip = self.down(x)
        deep = self.bottom(torch.nn.functional.avg_pool3d(skip, 2))
        return x + self.out(torch.cat([skip, self.up(deep)], dim=1))


def normalised(batch):
    """Noisy and clean cubes in units of each cube's noise rms, as (batch, 1, ...)."""
    rms = batch["params"][:, batch["param_names"].index("noise_rms")].reshape(-1, 1, 1, 1, 1)
    return batch["noisy"].unsqueeze(1) / rms, batch["clean"].unsqueeze(1) / rms


def rate(iterator, steps):
    """Cubes per second that ``iterator`` yields over ``steps`` batches (after one warm-up)."""
    next(iterator)
    start, cubes = time.perf_counter(), 0
    for _ in range(steps):
        cubes += len(next(iterator)["index"])
    return cubes / (time.perf_counter() - start)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="training time")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--held-out", type=int, default=64, help="cubes to evaluate on")
    parser.add_argument("--toy", action="store_true", help="tiny cubes, a few seconds")
    args = parser.parse_args(argv)
    priors = TOY if args.toy else PRIORS
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = UNet3D(width=8 if args.toy else 16).to(device)
    optimiser = torch.optim.AdamW(model.parameters(), lr=2e-3)

    # which one bounds the loop: the data alone, and the training alone (on one fixed batch)
    data_rate = rate(iter(StreamingCubes(priors, batch_size=args.batch, device=device)), 4)
    fixed = next(iter(StreamingCubes(priors, batch_size=args.batch, device=device)))
    noisy, clean = normalised(fixed)

    def step(noisy, clean):
        loss = torch.nn.functional.mse_loss(model(noisy), clean)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        return loss.detach()
    step(noisy, clean)
    start = time.perf_counter()
    for _ in range(3):
        step(noisy, clean)
    if device.type == "cuda":
        torch.cuda.synchronize()
    train_rate = 3 * args.batch / (time.perf_counter() - start)
    bound = "the training bounds the loop" if data_rate > train_rate else "the data bound it"
    print(f"data: {data_rate:.1f} cubes/s served; training: {train_rate:.1f} cubes/s consumed "
          f"({bound})")

    # train on fresh cubes for the time given
    stream = iter(StreamingCubes(priors, batch_size=args.batch, device=device, stop=HELD_OUT))
    start, steps, seen = time.perf_counter(), 0, 0
    while time.perf_counter() - start < 60 * args.minutes:
        batch = next(stream)
        loss = step(*normalised(batch))
        steps, seen = steps + 1, seen + len(batch["index"])
    elapsed = time.perf_counter() - start
    print(f"trained {steps} steps on {seen} cubes in {elapsed:.0f} s "
          f"({seen / elapsed:.1f} cubes/s end to end); last loss {float(loss):.3g}")

    # held-out cubes: the error against the clean cube before and after
    model.eval()
    sums = {"noise": 0.0, "denoised": 0.0, "noise_mask": 0.0, "denoised_mask": 0.0, "n": 0,
            "n_mask": 0}
    with torch.no_grad():
        for batch in StreamingCubes(priors, batch_size=args.batch, device=device,
                                    start=HELD_OUT, stop=HELD_OUT + args.held_out,
                                    keys=("noisy", "clean", "mask")):
            noisy, clean = normalised(batch)
            mask = batch["mask"].unsqueeze(1).bool()
            before, after = (noisy - clean) ** 2, (model(noisy) - clean) ** 2
            sums["noise"] += float(before.sum())
            sums["denoised"] += float(after.sum())
            sums["noise_mask"] += float(before[mask].sum())
            sums["denoised_mask"] += float(after[mask].sum())
            sums["n"] += before.numel()
            sums["n_mask"] += int(mask.sum())
    gain = (sums["noise"] / sums["denoised"]) ** 0.5
    gain_mask = (sums["noise_mask"] / max(sums["denoised_mask"], 1e-300)) ** 0.5
    print(f"held-out ({args.held_out} cubes): error rms {(sums['noise'] / sums['n']) ** 0.5:.3f} "
          f"-> {(sums['denoised'] / sums['n']) ** 0.5:.3f} noise rms (S/N gain {gain:.2f}x); "
          f"in the emission mask {gain_mask:.2f}x")
    return {"data_rate": data_rate, "train_rate": train_rate, "gain": gain,
            "gain_mask": gain_mask, "steps": steps}


if __name__ == "__main__":
    main()
