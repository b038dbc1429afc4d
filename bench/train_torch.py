#!/usr/bin/env python3
"""The PyTorch side of npm run bench:train: the same epochs on the same cached features.

usage: train_torch.py CONFIG_JSON   (run by bench/train.ts, which writes the features)
CONFIG: {"threads", "batch", "rows", "pool5": file, "fc7": file, "classes", "labels": file}
(raw float32 / int32, row-major). Builds fc8 alone (dropout on its fc7 input, as VGG's) and
fc6-fc8 (ReLU and dropout 0.5 after fc6 and fc7), torch.optim.SGD(lr 0.01, momentum 0.9,
weight decay 5e-4) each, then answers one line of JSON per line of stdin: "NAME EPOCHS" ->
{"seconds": wall time of EPOCHS epochs at the batch size}, so that the caller can alternate
its rounds with ours.
"""
import json, sys, time
import torch, torch.nn as nn

cfg = json.loads(sys.argv[1])
torch.set_num_threads(cfg["threads"])
torch.manual_seed(0)
rows, classes = cfg["rows"], cfg["classes"]
pool5 = torch.from_file(cfg["pool5"], size=rows * 25088, dtype=torch.float32).view(rows, 25088)
fc7 = torch.from_file(cfg["fc7"], size=rows * 4096, dtype=torch.float32).view(rows, 4096)
labels = torch.from_file(cfg["labels"], size=rows, dtype=torch.int32).long()

nets = {
    "fc8": (nn.Sequential(nn.Dropout(0.5), nn.Linear(4096, classes)), fc7),
    "fc6-fc8": (nn.Sequential(nn.Linear(25088, 4096), nn.ReLU(), nn.Dropout(0.5), nn.Linear(4096, 4096), nn.ReLU(),
                              nn.Dropout(0.5), nn.Linear(4096, classes)), pool5),
}
optimizers = {k: torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4) for k, (net, _) in nets.items()}
loss_fn = nn.CrossEntropyLoss()

def epochs(name, count):
    net, x = nets[name]
    opt = optimizers[name]
    net.train()
    for _ in range(count):
        for at in range(0, rows, cfg["batch"]):
            opt.zero_grad()
            loss = loss_fn(net(x[at:at + cfg["batch"]]), labels[at:at + cfg["batch"]])
            loss.backward()
            opt.step()
    return loss.item()

# Debian's torch calls whatever libblas.so.3 the system (or LD_LIBRARY_PATH) provides: say which.
blas = sorted({"/".join(l.split()[-1].rsplit("/", 2)[-2:]) for l in open("/proc/self/maps") if "blas" in l and "/" in l})
print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "blas": blas}), flush=True)
for line in sys.stdin:
    name, count = line.split()
    t = time.perf_counter()
    loss = epochs(name, int(count))
    print(json.dumps({"seconds": time.perf_counter() - t, "loss": loss}), flush=True)
