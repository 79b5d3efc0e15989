"""Reference numbers for tests/known_answers.rs (scipy/numpy).

Run: python3 -m venv /tmp/drift-venv && /tmp/drift-venv/bin/pip install scipy numpy
     /tmp/drift-venv/bin/python crates/freshet-drift/tests/known_answers.py
The generator (splitmix64 + Box-Muller) is the one in known_answers.rs, so both sides see the
same floats.
"""
import math

import numpy as np
import scipy
from scipy import stats
from scipy.spatial import distance

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

    def uniform(self):  # (0, 1)
        return ((self.next_u64() >> 11) + 0.5) * (1.0 / (1 << 53))

    def normal(self):  # Box-Muller, one value per two uniforms
        u1, u2 = self.uniform(), self.uniform()
        return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


def normals(seed, n, mean, sd):
    g = SplitMix64(seed)
    return np.array([mean + sd * g.normal() for _ in range(n)])


def numeric_case(name, ref, win, bins=10):
    edges = np.unique(np.quantile(ref, [j / bins for j in range(1, bins)]))
    rc = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=len(edges) + 1)
    wc = np.bincount(np.searchsorted(edges, win, side="right"), minlength=len(edges) + 1)
    e, a = rc / rc.sum(), wc / wc.sum()
    e = np.where(e == 0, 1e-4, e)
    a = np.where(a == 0, 1e-4, a)
    psi = float(np.sum((a - e) * np.log(a / e)))
    js = float(distance.jensenshannon(rc / rc.sum(), wc / wc.sum(), base=2))
    ks = stats.ks_2samp(ref, win, method="asymp")
    ks_exact = stats.ks_2samp(ref, win, method="exact")
    wd = float(stats.wasserstein_distance(ref, win) / np.std(ref))
    print(f"{name}: ref_counts={rc.tolist()} win_counts={wc.tolist()}")
    print(f"  psi={psi!r} js={js!r}")
    print(f"  ks_stat={float(ks.statistic)!r} ks_p_asymp={float(ks.pvalue)!r} ks_p_exact={float(ks_exact.pvalue)!r}")
    print(f"  wasserstein_normed={wd!r}")


print("scipy", scipy.__version__, "numpy", np.__version__)
numeric_case("shift", normals(1, 1000, 0.0, 1.0), normals(2, 500, 0.3, 1.0))
numeric_case("small_shift", normals(3, 2000, 0.0, 1.0), normals(4, 1000, 0.08, 1.0))
numeric_case("same", normals(5, 3000, 0.0, 1.0), normals(6, 3000, 0.0, 1.0))
numeric_case("ties", np.round(normals(7, 800, 0.0, 1.0), 1), np.round(normals(8, 600, 0.0, 1.3), 1))

obs, ref = [48, 35, 15, 3, 9], [400, 300, 200, 50, 50]
c = stats.chisquare(obs, f_exp=np.array(ref) * sum(obs) / sum(ref))
print(f"chisq: stat={float(c.statistic)!r} p={float(c.pvalue)!r}")
obs, ref = [1210, 980, 1015, 797], [1000, 1000, 1000, 1000]
c = stats.chisquare(obs, f_exp=np.array(ref) * sum(obs) / sum(ref))
print(f"chisq2: stat={float(c.statistic)!r} p={float(c.pvalue)!r}")
c = stats.chisquare([315, 108, 101, 32], f_exp=np.array([9, 3, 3, 1]) * 556 / 16)
print(f"mendel: stat={float(c.statistic)!r} p={float(c.pvalue)!r}")
print("lgamma(100.5)", math.lgamma(100.5))
for z in [0.5, 1.0, 2.0]:
    print("kolmogorov", z, float(scipy.special.kolmogorov(z)))
for x, df in [(3.84145882069412, 1), (11.070497693516351, 5), (150.0, 100), (0.5, 30), (5000.0, 4000)]:
    print("chi2.sf", x, df, float(stats.chi2.sf(x, df)))
for d, n, m in [(0.05, 1000, 1000), (0.1, 300, 200), (0.02, 100000, 20000), (0.2, 60, 40)]:
    en = n * m / (n + m)
    print("kstwo", d, n, m, float(stats.kstwo.sf(d, round(en))))

# Categorical: reference a*400 b*300 c*200 d*50 e*50 with top_k=3 -> [400, 300, 200, other 100];
# window a*48 b*35 c*15 d*3 e*9 f*4 -> [48, 35, 15, other 16].
rc, wc = np.array([400, 300, 200, 100]), np.array([48, 35, 15, 16])
c = stats.chisquare(wc, f_exp=rc * wc.sum() / rc.sum())
e, a = rc / rc.sum(), wc / wc.sum()
print(f"categorical: chisq stat={float(c.statistic)!r} p={float(c.pvalue)!r} "
      f"psi={float(np.sum((a - e) * np.log(a / e)))!r} js={float(distance.jensenshannon(e, a, base=2))!r}")
