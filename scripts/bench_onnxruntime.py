#!/usr/bin/env python3
"""onnxruntime peer for `facemark bench host`.

Runs an ONNX model (the float or the int8 export of the same network) on the
images that `facemark` wrote (--images: raw 96x96 grey bytes, one image after
another), one image per run as the int8 engine does, with onnxruntime's
CPU provider at --threads intra-op threads, and prints one JSON line:
{"seconds_per_image": best round, "outputs": first image's 30 values,
 "onnxruntime": version, "threads": n}.
With --batch-all it instead runs all images as one batch (throughput).
When onnxruntime is not installed it prints {"error": "..."} and exits with 3.
"""
import argparse
import json
import sys
import time
import warnings


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--images", required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-all", action="store_true")
    args = ap.parse_args()

    warnings.filterwarnings("ignore")
    try:
        import numpy as np
        import onnxruntime as ort
    except ImportError as e:
        print(json.dumps({"error": f"onnxruntime is not installed ({e}); pip install onnxruntime"}))
        return 3

    raw = np.fromfile(args.images, dtype=np.uint8)
    side = 96
    if raw.size == 0 or raw.size % (side * side) != 0:
        print(json.dumps({"error": f"{args.images}: {raw.size} bytes, not whole 96x96 images"}))
        return 2
    images = (raw.reshape(-1, 1, side, side).astype(np.float32) / np.float32(255.0))

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = args.threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(args.model, sess_options=opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    # The exported graphs have a fixed batch of 1 unless their input is symbolic.
    dim0 = sess.get_inputs()[0].shape[0]
    batched = args.batch_all and not isinstance(dim0, int)
    singles = [images[i:i + 1] for i in range(images.shape[0])]

    def round_():
        if batched:
            sess.run(None, {name: images})
        else:
            for x in singles:
                sess.run(None, {name: x})

    round_()  # warm-up
    best = float("inf")
    for _ in range(args.rounds):
        t = time.perf_counter()
        round_()
        best = min(best, (time.perf_counter() - t) / images.shape[0])
    out = sess.run(None, {name: singles[0]})[0].reshape(-1).tolist()
    print(json.dumps({
        "seconds_per_image": best,
        "outputs": out,
        "onnxruntime": ort.__version__,
        "threads": args.threads,
        "batched": batched,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
