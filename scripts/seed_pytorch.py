#!/usr/bin/env python3
"""The seed network in PyTorch, trained as the seed report trains it and
exported with `torch.onnx.export`: the fixture `models/seed-pytorch.onnx`,
which `facemark eval`, `quantize` and `export` read (host/src/float/onnx_in.rs).

    python3 scripts/seed_pytorch.py --train ../shared/data/faces96-train.csv.gz \
        --out models/seed-pytorch.onnx

The seed's own `nn.Sequential` (Conv2d 3x3 padding 1 - ReLU - MaxPool2d(2)
four times, Dropout2d(0.5), Flatten, Linear(4608, 256) - ReLU - Linear(256, 30)),
Adam lr 1e-3, batch 16, MSE on [-1, 1] coordinates (labelled ones only),
input pixel / 255. Without --train the weights stay PyTorch's initial ones.
--dropout-nodes exports in training mode's graph shape, Dropout nodes
included (onnx_in must pass them).
"""
import argparse
import csv
import gzip
import io
import sys
import time


def load(path, limit=None):
    import numpy as np

    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", newline="") as f:
        rows = csv.reader(f)
        header = next(rows)
        image_col = header.index("Image")
        key_cols = [i for i, h in enumerate(header) if h.endswith("_x") or h.endswith("_y")]
        images, targets = [], []
        for row in rows:
            if not row:
                continue
            images.append(np.array(row[image_col].split(), dtype=np.float32) / 255.0)
            targets.append([float(row[i]) if row[i] else float("nan") for i in key_cols])
            if limit and len(images) >= limit:
                break
    x = np.stack(images).reshape(-1, 1, 96, 96)
    y = (np.array(targets, dtype=np.float32) - 48.0) / 48.0
    return x, y


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", help="Kaggle CSV (.csv or .csv.gz); omit for untrained weights")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dropout-nodes", action="store_true")
    ap.add_argument("--out", default="models/seed-pytorch.onnx")
    args = ap.parse_args()

    import numpy as np
    import torch
    from torch import nn

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Dropout2d(0.5),
        nn.Flatten(),
        nn.Linear(4608, 256), nn.ReLU(),
        nn.Linear(256, 30),
    )
    if args.train:
        x, y = load(args.train)
        x, y = torch.from_numpy(x), torch.from_numpy(y)
        print(f"{len(x)} faces from {args.train}", file=sys.stderr)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-7)
        g = torch.Generator().manual_seed(args.seed)
        for epoch in range(args.epochs):
            model.train()
            order = torch.randperm(len(x), generator=g)
            total, count, t0 = 0.0, 0, time.time()
            for b in range(0, len(x), args.batch):
                idx = order[b : b + args.batch]
                target = y[idx]
                mask = ~torch.isnan(target)
                out = model(x[idx])
                loss = ((out - torch.nan_to_num(target)) ** 2 * mask).sum() / mask.sum().clamp(min=1)
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
                count += len(idx)
            print(f"epoch {epoch + 1}/{args.epochs}: train MSE {total / count:.6f} ({time.time() - t0:.0f} s)", file=sys.stderr)
    model.eval()
    dummy = torch.zeros(1, 1, 96, 96)
    mode = torch.onnx.TrainingMode.PRESERVE if args.dropout_nodes else torch.onnx.TrainingMode.EVAL
    if args.dropout_nodes:
        model.train()
    torch.onnx.export(
        model,
        dummy,
        args.out,
        input_names=["image"],
        output_names=["keypoints"],
        dynamic_axes={"image": {0: "batch"}, "keypoints": {0: "batch"}},
        opset_version=13,
        training=mode,
        do_constant_folding=not args.dropout_nodes,
        dynamo=False,
    )
    print(f"wrote {args.out} (torch {torch.__version__})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
