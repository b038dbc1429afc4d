#!/usr/bin/env python3
"""The PyTorch side of the GPU benchmark (issue #7), run by scripts/device-check.sh.

usage: cuda_torch.py WEIGHTS_OUT.safetensors RESULT.json
Builds VGG16 (torchvision's layout, seeded random weights), saves the weights for vggnet to
load, then times PyTorch eager on the same card: bf16, channels_last, cudnn.benchmark = True,
batch 1, 32 and 256, with CUDA events after warm-up; also the bf16 matrix rate of the card.
"""
import ctypes, json, struct, sys, time
import torch, torch.nn as nn

CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
BATCHES = [1, 32, 256]


def vgg16():
    layers, c = [], 3
    for v in CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=True)]
            c = v
    m = nn.Sequential()
    m.features = nn.Sequential(*layers)
    m.avgpool = nn.AdaptiveAvgPool2d((7, 7))
    m.flatten = nn.Flatten()
    m.classifier = nn.Sequential(nn.Linear(512 * 49, 4096), nn.ReLU(True), nn.Dropout(), nn.Linear(4096, 4096), nn.ReLU(True),
                                 nn.Dropout(), nn.Linear(4096, 1000))
    return m


def save_safetensors(path, sd):
    header, offset, blobs = {}, 0, []
    for name, t in sd.items():
        t = t.detach().float().contiguous().cpu()
        b = ctypes.string_at(t.data_ptr(), t.numel() * t.element_size())  # no numpy needed
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def time_gpu(fn, iters):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


def main():
    torch.manual_seed(0)
    model = vgg16().eval()
    save_safetensors(sys.argv[1], {k: v for k, v in model.state_dict().items()})
    torch.backends.cudnn.benchmark = True
    dev = torch.device("cuda")
    model = model.to(dev, dtype=torch.bfloat16).to(memory_format=torch.channels_last)
    result = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "cudnn": torch.backends.cudnn.version(), "batches": {}}

    a = torch.randn(8192, 8192, device=dev, dtype=torch.bfloat16)
    ms = time_gpu(lambda: a @ a, 20)
    result["bf16_matmul_tflops"] = 2 * 8192 ** 3 / (ms / 1e3) / 1e12

    with torch.inference_mode():
        for n in BATCHES:
            x_host = torch.randn(n, 3, 224, 224)
            x = x_host.to(dev, dtype=torch.bfloat16).to(memory_format=torch.channels_last)
            gpu_ms = time_gpu(lambda: model(x), 20 if n < 256 else 10)

            def end_to_end():  # float32 NCHW on the host in, fc8 logits on the host out: what vggnet's run does
                return model(x_host.to(dev, non_blocking=False).to(torch.bfloat16).to(memory_format=torch.channels_last)).float().cpu()
            for _ in range(2):
                end_to_end()
            t = time.perf_counter()
            iters = 10 if n < 256 else 5
            for _ in range(iters):
                end_to_end()
            e2e_ms = (time.perf_counter() - t) * 1e3 / iters
            result["batches"][str(n)] = {"gpu_ms": gpu_ms, "end_to_end_ms": e2e_ms}
            print(f"torch bf16 batch {n}: {gpu_ms:.2f} ms on the GPU, {e2e_ms:.2f} ms end to end", flush=True)
    json.dump(result, open(sys.argv[2], "w"), indent=1)


if __name__ == "__main__":
    main()
