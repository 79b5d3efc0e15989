"""Detection indices of River's ADWIN and PageHinkley on the streams of tests/detectors.rs.

Run: /tmp/drift-venv/bin/pip install river scipy numpy
     /tmp/drift-venv/bin/python crates/freshet-drift/tests/river_detectors.py
"""
import math

import river
from river import drift

M64 = (1 << 64) - 1


class SplitMix64:
    def __init__(self, seed):
        self.s = seed & M64

    def next_u64(self):
        self.s = (self.s + 0x9E3779B97F4A7C15) & M64
        z = self.s
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        return z ^ (z >> 31)

    def uniform(self):
        return ((self.next_u64() >> 11) + 0.5) * (1.0 / (1 << 53))

    def normal(self):
        u1, u2 = self.uniform(), self.uniform()
        return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


def stream(seed, n, shift_at, shift, sd=1.0):
    g = SplitMix64(seed)
    return [sd * g.normal() + (shift if i >= shift_at else 0.0) for i in range(n)]


def detections(detector, xs):
    out = []
    for i, x in enumerate(xs):
        detector.update(x)
        if detector.drift_detected:
            out.append(i)
    return out


print("river", river.__version__)
for seed in [1, 2, 3]:
    xs = stream(seed, 520_000, 500_000, 0.25)
    print(f"adwin seed {seed}: {detections(drift.ADWIN(), xs)}")
for seed in [1, 2, 3]:
    xs = stream(seed, 20_000, 10_000, 0.25, sd=0.1)
    print(f"ph sd0.1 seed {seed}: {detections(drift.PageHinkley(), xs)}")
xs = stream(1, 20_000, 10_000_000, 0.0)
print(f"ph N(0,1) seed 1: {detections(drift.PageHinkley(), xs)}")

g = SplitMix64(11)
means = [0.0, 0.5, -0.5, 0.2]
xs = [g.normal() + means[i // 50_000] for i in range(200_000)]
print(f"adwin piecewise seed 11: {detections(drift.ADWIN(), xs)}")
print(f"ph piecewise seed 11: {detections(drift.PageHinkley(), xs)}")
