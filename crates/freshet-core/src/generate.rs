//! A deterministic generator of card-transaction events (the shape of `topics/transactions.toml`):
//! zipf-distributed cards and merchants, log-normal amounts, a country mix, 5 % of events out
//! of order by up to `disorder_ms`, and a shift of amounts and countries when `shifted` is set.
//! Used by `freshet demo`, the benchmarks and the tests; the same seed gives the same events.

/// Countries and their mix before and after the shift.
pub const COUNTRIES: [&str; 10] = ["US", "GB", "DE", "FR", "IN", "BR", "NG", "JP", "CA", "MX"];
const MIX_BEFORE: [f64; 10] = [0.40, 0.12, 0.10, 0.08, 0.08, 0.06, 0.04, 0.05, 0.04, 0.03];
const MIX_AFTER: [f64; 10] = [0.25, 0.10, 0.08, 0.07, 0.15, 0.08, 0.12, 0.05, 0.05, 0.05];

/// splitmix64: small, fast and deterministic.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub const fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal (Box–Muller).
    pub fn gauss(&mut self) -> f64 {
        let (u, v) = (self.unit().max(1e-300), self.unit());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// An index drawn from a cumulative distribution.
    pub fn pick(&mut self, cdf: &[f64]) -> usize {
        let x = self.unit();
        cdf.partition_point(|c| *c < x)
            .min(cdf.len().saturating_sub(1))
    }
}

fn cdf(weights: impl Iterator<Item = f64>) -> Vec<f64> {
    let w: Vec<f64> = weights.collect();
    let total: f64 = w.iter().sum();
    w.iter()
        .scan(0.0, |acc, x| {
            *acc += x / total;
            Some(*acc)
        })
        .collect()
}

/// Generates transaction events as JSON lines.
#[derive(Debug, Clone)]
pub struct TxnGenerator {
    rng: Rng,
    cards: Vec<f64>,
    merchants: Vec<f64>,
    before: Vec<f64>,
    after: Vec<f64>,
    /// Largest amount of time an out-of-order event lags, ms.
    pub disorder_ms: u64,
    /// Fraction of records written malformed (amount as a string).
    pub malformed_fraction: f64,
    next_id: u64,
}

impl TxnGenerator {
    /// A generator over `cards` cards (zipf 1.1) and 1000 merchants (zipf 1.0).
    pub fn new(seed: u64, cards: u32) -> Self {
        Self {
            rng: Rng::new(seed),
            cards: cdf((1..=cards.max(1)).map(|i| 1.0 / f64::from(i).powf(1.1))),
            merchants: cdf((1..=1000).map(|i| 1.0 / f64::from(i))),
            before: cdf(MIX_BEFORE.into_iter()),
            after: cdf(MIX_AFTER.into_iter()),
            disorder_ms: 2_000,
            malformed_fraction: 0.0,
            next_id: 0,
        }
    }

    /// Appends one event at time `ts_ms` (or up to `disorder_ms` earlier, 5 % of the time) to
    /// `out`, without a trailing newline.
    pub fn write_event(&mut self, ts_ms: u64, shifted: bool, out: &mut Vec<u8>) {
        use std::io::Write;
        let rng = &mut self.rng;
        let id = self.next_id;
        self.next_id += 1;
        let ts = if rng.unit() < 0.05 && self.disorder_ms > 0 {
            ts_ms.saturating_sub(rng.next_u64() % (self.disorder_ms + 1))
        } else {
            ts_ms
        };
        let card = rng.pick(&self.cards);
        let merchant = rng.pick(&self.merchants);
        let amount = (rng.gauss() + if shifted { 3.9 } else { 3.5 }).exp();
        let country = COUNTRIES[rng.pick(if shifted { &self.after } else { &self.before })];
        // fraud: more likely for large amounts and some countries (a learnable signal)
        let risk = match country {
            "NG" => 1.5,
            "BR" => 0.6,
            "MX" => 0.5,
            "IN" => 0.3,
            _ => 0.0,
        };
        let z = -3.0 + 1.2 * (amount.ln() - 3.5) + risk;
        let is_fraud = u8::from(rng.unit() < 1.0 / (1.0 + (-z).exp()));
        let malformed = rng.unit() < self.malformed_fraction;
        // writing to a Vec cannot fail
        let _ = if malformed {
            write!(
                out,
                r#"{{"event_id":{id},"card_id":"c{card:07}","ts":{ts},"amount":"{amount:.2}"}}"#
            )
        } else {
            write!(
                out,
                r#"{{"event_id":{id},"card_id":"c{card:07}","ts":{ts},"amount":{amount:.2},"merchant":"m{merchant:04}","country":"{country}","is_fraud":{is_fraud}}}"#
            )
        };
    }

    /// `n` events, one per line, with event times starting at `start_ms` and `gap_ms` apart;
    /// the second half is shifted.
    pub fn lines(&mut self, n: u64, start_ms: u64, gap_ms: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(usize::try_from(n).unwrap_or(0).saturating_mul(120));
        for i in 0..n {
            self.write_event(start_ms + i * gap_ms, i >= n / 2, &mut out);
            out.push(b'\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_events() {
        let a = TxnGenerator::new(7, 100).lines(1000, 0, 10);
        let b = TxnGenerator::new(7, 100).lines(1000, 0, 10);
        assert_eq!(a, b);
        assert_eq!(a.iter().filter(|c| **c == b'\n').count(), 1000);
    }
}
