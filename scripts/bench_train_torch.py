#!/usr/bin/env python3
"""PyTorch peer for `facemark bench train`.

Builds the seed network from the layer table that `facemark` passes in
(--network JSON), trains it on random data (batch --batch, Adam lr 1e-3,
weight decay 1e-7, MSE) and prints one JSON line:
{"seconds_per_batch": ..., "torch": version, "threads": n}.
When torch is not installed it prints {"error": "..."} and exits with 3.
"""
import argparse
import json
import sys
import time
import warnings


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--network", required=True, help="layer table as JSON")
    args = ap.parse_args()

    warnings.filterwarnings("ignore")
    try:
        import torch
        from torch import nn
    except ImportError as e:
        print(json.dumps({"error": f"PyTorch is not installed ({e}); pip install torch"}))
        return 3

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net_desc = json.loads(args.network)
    mods = []
    flattened = False
    for i, layer in enumerate(net_desc["layers"]):
        if i == net_desc["dropout2d_before"]:
            mods.append(nn.Dropout2d(net_desc["dropout2d_p"]))
        if layer["kind"] == "conv":
            mods += [nn.Conv2d(layer["in"], layer["out"], 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        else:
            if not flattened:
                mods.append(nn.Flatten())
                flattened = True
            mods.append(nn.Linear(layer["in"], layer["out"]))
            if layer["relu"]:
                mods.append(nn.ReLU())
    model = nn.Sequential(*mods)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_uniform_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-7)
    loss_fn = nn.MSELoss()
    x = torch.rand(args.batch, 1, 96, 96)
    y = torch.rand(args.batch, net_desc["outputs"]) * 2 - 1

    def step():
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss.item()

    for _ in range(args.warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(args.batches):
        step()
    dt = (time.perf_counter() - t0) / args.batches
    print(json.dumps({"seconds_per_batch": dt, "torch": torch.__version__, "threads": torch.get_num_threads()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
