# The card's HBM bandwidth (bench/gpu/decode.sh feeds it to the timing tool).
# HBM bandwidth on this GPU: fp16 sum (read-only) and copy (read+write) of 8 GiB.
import torch, time
n = 8 * 2**30 // 2
x = torch.empty(n, dtype=torch.float16, device="cuda"); x.fill_(1.0)
y = torch.empty_like(x)
def t(f, reps=20):
    for _ in range(3): f()
    torch.cuda.synchronize(); a = time.perf_counter()
    for _ in range(reps): f()
    torch.cuda.synchronize(); return (time.perf_counter() - a) / reps
r = t(lambda: x.sum()); c = t(lambda: y.copy_(x))
print(f"BW read_tbs={2*n/r/1e12:.3f} copy_tbs={4*n/c/1e12:.3f} (bytes read+written / time) gpu={torch.cuda.get_device_name()}")
