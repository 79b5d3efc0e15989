//! Loading JSON-lines events into a topic: each line is one message, keyed by its entity field
//! so that one entity stays in one partition (and its events in order), at a bounded rate.

use std::io::BufRead;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::client::Error;
use crate::sink::KafkaProducer;

/// How long `produce` waits at the end for the last deliveries.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

/// What a `produce` run sent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProduceStats {
    /// Messages delivered.
    pub records: u64,
    /// Messages sent without a key (the line is not a JSON object with the key field).
    pub unkeyed: u64,
    /// Wall time from the first send to the last delivery.
    pub elapsed: Duration,
}

impl ProduceStats {
    /// Delivered messages per second.
    pub fn rate(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// The message key of one line: the value of `key_field` (a string as is, a number as written).
pub fn key_of(line: &[u8], key_field: &str) -> Option<Vec<u8>> {
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(line) else {
        return None;
    };
    match fields.get(key_field)? {
        Value::String(s) => Some(s.as_bytes().to_vec()),
        Value::Number(n) => Some(n.to_string().into_bytes()),
        _ => None,
    }
}

/// Sends every non-empty line of `input` to `topic`, keyed by `key_field` when given, at most
/// `rate` messages per second when given, then waits for every delivery.
pub fn produce_lines(
    producer: &KafkaProducer,
    topic: &str,
    input: impl BufRead,
    key_field: Option<&str>,
    rate: Option<f64>,
) -> Result<ProduceStats, Error> {
    producer.partition_count(topic)?;
    let start = Instant::now();
    let before = producer.stats().delivered;
    let mut sent = 0u64;
    let mut unkeyed = 0u64;
    for line in input.split(b'\n') {
        let line = line.map_err(|e| Error::Io {
            path: "input".to_owned(),
            error: e,
        })?;
        let line = line.trim_ascii();
        if line.is_empty() {
            continue;
        }
        if let Some(rate) = rate.filter(|r| *r > 0.0) {
            // Pace against the start, not the previous send, so that sleeps do not drift.
            let due = start + Duration::from_secs_f64(sent as f64 / rate);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        let key = key_field.and_then(|field| key_of(line, field));
        if key_field.is_some() && key.is_none() {
            unkeyed += 1;
        }
        producer.send(topic, key.as_deref(), line, None)?;
        sent += 1;
    }
    let stats = producer.finish(FLUSH_TIMEOUT)?;
    Ok(ProduceStats {
        records: stats.delivered - before,
        unkeyed,
        elapsed: start.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_strings_or_numbers_of_the_key_field() {
        assert_eq!(
            key_of(br#"{"card_id":"c7","x":1}"#, "card_id"),
            Some(b"c7".to_vec())
        );
        assert_eq!(
            key_of(br#"{"card_id":42}"#, "card_id"),
            Some(b"42".to_vec())
        );
        assert_eq!(key_of(br#"{"other":1}"#, "card_id"), None);
        assert_eq!(key_of(b"not json", "card_id"), None);
    }
}
