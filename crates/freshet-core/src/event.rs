//! Decoding of JSON events into the fields a pipeline reads.
//!
//! An event is a JSON object. Its entity is a string or an integer (integers are kept as their
//! decimal string); its event time is epoch milliseconds (a non-negative integer) or an RFC 3339
//! string. Fields read by a numeric aggregate must be numbers; fields read by `count_distinct`,
//! `approx_count_distinct` or `last` must be scalars (string, number, boolean) or absent/null.
//! Anything else is a [`Rejection`] whose text says what and where; nothing panics on bad input.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

/// A scalar field value as read from an event.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Scalar {
    /// Absent or JSON `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// Any JSON number.
    Num(f64),
    /// A JSON string.
    Str(Box<str>),
}

impl Scalar {
    /// A stable 64-bit hash of the value, the same on every worker and every run.
    pub fn stable_hash(&self) -> u64 {
        use xxhash_rust::xxh3::xxh3_64_with_seed;
        match self {
            Self::Null => 0x6e75_6c6c,
            Self::Bool(b) => u64::from(*b) + 1,
            Self::Num(n) => xxh3_64_with_seed(&n.to_bits().to_le_bytes(), 1),
            Self::Str(s) => xxh3_64_with_seed(s.as_bytes(), 2),
        }
    }

    fn type_name(&self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Bool(_) => "a boolean",
            Self::Num(_) => "a number",
            Self::Str(_) => "a string",
        }
    }
}

/// How a field is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// Required JSON number.
    Number,
    /// Optional scalar (string, number, boolean or null).
    Scalar,
}

/// Which fields of an event a pipeline reads, and how.
#[derive(Debug, Clone)]
pub struct EventSchema {
    /// Field holding the entity key.
    pub entity: String,
    /// Field holding the event time.
    pub event_time: String,
    /// Other fields read, in slot order.
    pub fields: Vec<(String, FieldKind)>,
    /// Declared types to validate (a topic's schema): a violation rejects the event.
    pub checks: Vec<FieldCheck>,
}

/// JSON types a topic schema declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckedType {
    /// A JSON integer.
    Integer,
    /// Any JSON number.
    Number,
    /// A JSON string.
    String,
    /// `true` or `false`.
    Boolean,
    /// Epoch milliseconds (integer) or an RFC 3339 string.
    Timestamp,
}

impl CheckedType {
    fn name(self) -> &'static str {
        match self {
            Self::Integer => "an integer",
            Self::Number => "a number",
            Self::String => "a string",
            Self::Boolean => "a boolean",
            Self::Timestamp => "epoch milliseconds or an RFC 3339 string",
        }
    }
}

/// One declared field of a topic schema, checked on every event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldCheck {
    /// Field name.
    pub name: String,
    /// Its declared type (null is allowed unless `required`).
    pub ty: CheckedType,
    /// Must be present and not null.
    pub required: bool,
}

/// An event reduced to what the pipeline reads.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Decoded {
    /// Entity key (integers as their decimal string).
    pub entity: String,
    /// Event time, epoch milliseconds.
    pub ts_ms: u64,
    /// Values of [`EventSchema::fields`], in slot order.
    pub values: Vec<Scalar>,
}

/// Why an event was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Rejection {
    /// The bytes are not a JSON document.
    #[error("not valid JSON: {0}")]
    NotJson(String),
    /// The document is not an object.
    #[error("expected a JSON object")]
    NotObject,
    /// A required field is absent or null.
    #[error("missing field `{0}`")]
    Missing(String),
    /// A field has the wrong type.
    #[error("field `{field}`: expected {expected}, found {found}")]
    WrongType {
        /// The field.
        field: String,
        /// What the pipeline expects there.
        expected: &'static str,
        /// What the event holds.
        found: String,
    },
    /// Event time that is not a valid instant.
    #[error("field `{field}`: {reason}")]
    BadTime {
        /// The event-time field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Event arrived later than the source's allowed lateness.
    #[error("late: event time {ts_ms} is more than {lateness_ms} ms behind its partition's clock {clock_ms}")]
    Late {
        /// The event's time.
        ts_ms: u64,
        /// The partition's max event time when it arrived.
        clock_ms: u64,
        /// The source's allowed lateness.
        lateness_ms: u64,
    },
}

/// A raw value for one slot, before type checks.
#[derive(Debug, Clone, PartialEq)]
enum Raw {
    Scalar(Scalar),
    Int(i64),
    /// An integer above `i64::MAX`.
    UInt(u64),
    Nested(&'static str),
}

impl Raw {
    fn describe(&self) -> String {
        match self {
            Self::Scalar(s) => s.type_name().to_owned(),
            Self::Int(_) | Self::UInt(_) => "a number".to_owned(),
            Self::Nested(kind) => (*kind).to_owned(),
        }
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Raw, E> {
        Ok(Raw::Scalar(Scalar::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Raw, E> {
        Ok(Raw::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Raw, E> {
        Ok(i64::try_from(v).map_or(Raw::UInt(v), Raw::Int))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Raw, E> {
        Ok(Raw::Scalar(Scalar::Num(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Raw, E> {
        Ok(Raw::Scalar(Scalar::Str(v.into())))
    }
    fn visit_unit<E>(self) -> Result<Raw, E> {
        Ok(Raw::Scalar(Scalar::Null))
    }
    fn visit_none<E>(self) -> Result<Raw, E> {
        Ok(Raw::Scalar(Scalar::Null))
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Raw::Nested("an array"))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Raw::Nested("an object"))
    }
}

struct RawSeed;

impl<'de> DeserializeSeed<'de> for RawSeed {
    type Value = Raw;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

/// Finds the slot a key maps to: 0 = entity, 1 = time, 2.. = fields, `None` = not read.
struct KeySeed<'a>(&'a EventSchema);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Option<usize>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E>(self, key: &str) -> Result<Option<usize>, E> {
        let schema = self.0;
        if key == schema.entity {
            return Ok(Some(0));
        }
        if key == schema.event_time {
            return Ok(Some(1));
        }
        if let Some(i) = schema.fields.iter().position(|(name, _)| name == key) {
            return Ok(Some(i + 2));
        }
        Ok(schema
            .checks
            .iter()
            .position(|c| c.name == key)
            .map(|i| i + 2 + schema.fields.len()))
    }
}

struct EventVisitor<'a> {
    schema: &'a EventSchema,
}

impl<'de> Visitor<'de> for EventVisitor<'_> {
    type Value = Option<Vec<Option<Raw>>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut slots: Vec<Option<Raw>> =
            vec![None; self.schema.fields.len() + self.schema.checks.len() + 2];
        while let Some(slot) = map.next_key_seed(KeySeed(self.schema))? {
            match slot {
                Some(i) => slots[i] = Some(map.next_value_seed(RawSeed)?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Some(slots))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

impl EventSchema {
    /// Decodes one JSON event.
    pub fn decode(&self, bytes: &[u8]) -> Result<Decoded, Rejection> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let slots = de
            .deserialize_any(EventVisitor { schema: self })
            .and_then(|v| de.end().map(|()| v))
            .map_err(|e| Rejection::NotJson(e.to_string()))?
            .ok_or(Rejection::NotObject)?;
        if !self.checks.is_empty() {
            self.validate(&slots)?;
        }
        let mut slots = slots.into_iter();
        let entity_raw = slots.next().flatten();
        let time_raw = slots.next().flatten();
        let mut values = Vec::with_capacity(self.fields.len());
        for ((name, kind), raw) in self.fields.iter().zip(slots) {
            // the entity and time keys land in their own slots: a field read under the same
            // name (a join key that is the entity) takes the same value
            let raw = match raw {
                None if *name == self.entity => entity_raw.clone(),
                None if *name == self.event_time => time_raw.clone(),
                raw => raw,
            };
            values.push(check_field(name, *kind, raw)?);
        }
        let entity = self.entity_of(entity_raw)?;
        let ts_ms = self.time_of(time_raw)?;
        Ok(Decoded {
            entity,
            ts_ms,
            values,
        })
    }

    /// Checks the declared types: a field the pipeline also reads is found in its own slot.
    fn validate(&self, slots: &[Option<Raw>]) -> Result<(), Rejection> {
        for (j, check) in self.checks.iter().enumerate() {
            let slot = if check.name == self.entity {
                0
            } else if check.name == self.event_time {
                1
            } else {
                self.fields
                    .iter()
                    .position(|(n, _)| *n == check.name)
                    .map_or(2 + self.fields.len() + j, |i| i + 2)
            };
            let raw = slots.get(slot).and_then(Option::as_ref);
            let ok = match (check.ty, raw) {
                (_, None | Some(Raw::Scalar(Scalar::Null))) => {
                    if check.required {
                        return Err(Rejection::Missing(check.name.clone()));
                    }
                    true
                }
                (CheckedType::Integer, Some(Raw::Int(_) | Raw::UInt(_))) => true,
                (CheckedType::Integer, Some(Raw::Scalar(Scalar::Num(n)))) => n.fract() == 0.0,
                (
                    CheckedType::Number,
                    Some(Raw::Int(_) | Raw::UInt(_) | Raw::Scalar(Scalar::Num(_))),
                ) => true,
                (CheckedType::String, Some(Raw::Scalar(Scalar::Str(_)))) => true,
                (CheckedType::Boolean, Some(Raw::Scalar(Scalar::Bool(_)))) => true,
                (CheckedType::Timestamp, Some(Raw::Int(_) | Raw::UInt(_))) => true,
                (CheckedType::Timestamp, Some(Raw::Scalar(Scalar::Str(s)))) => {
                    parse_rfc3339_ms(s).is_ok()
                }
                _ => false,
            };
            if !ok {
                return Err(Rejection::WrongType {
                    field: check.name.clone(),
                    expected: check.ty.name(),
                    found: raw.map_or_else(|| "nothing".to_owned(), Raw::describe),
                });
            }
        }
        Ok(())
    }

    fn entity_of(&self, raw: Option<Raw>) -> Result<String, Rejection> {
        match raw {
            Some(Raw::Scalar(Scalar::Str(s))) => Ok(s.into()),
            Some(Raw::Int(i)) => Ok(i.to_string()),
            Some(Raw::UInt(u)) => Ok(u.to_string()),
            None | Some(Raw::Scalar(Scalar::Null)) => Err(Rejection::Missing(self.entity.clone())),
            Some(other) => Err(Rejection::WrongType {
                field: self.entity.clone(),
                expected: "a string or an integer",
                found: other.describe(),
            }),
        }
    }

    fn time_of(&self, raw: Option<Raw>) -> Result<u64, Rejection> {
        let field = &self.event_time;
        match raw {
            Some(Raw::UInt(ms)) => Ok(ms),
            Some(Raw::Int(ms)) => u64::try_from(ms).map_err(|_| Rejection::BadTime {
                field: field.clone(),
                reason: format!("{ms} is before 1970-01-01T00:00:00Z"),
            }),
            Some(Raw::Scalar(Scalar::Str(s))) => {
                parse_rfc3339_ms(&s).map_err(|reason| Rejection::BadTime {
                    field: field.clone(),
                    reason,
                })
            }
            None | Some(Raw::Scalar(Scalar::Null)) => Err(Rejection::Missing(field.clone())),
            Some(other) => Err(Rejection::WrongType {
                field: field.clone(),
                expected: "epoch milliseconds (integer) or an RFC 3339 string",
                found: other.describe(),
            }),
        }
    }
}

fn check_field(name: &str, kind: FieldKind, raw: Option<Raw>) -> Result<Scalar, Rejection> {
    let wrong = |expected, found: &Raw| Rejection::WrongType {
        field: name.to_owned(),
        expected,
        found: found.describe(),
    };
    match (kind, raw) {
        (FieldKind::Number, Some(Raw::Int(i))) => Ok(Scalar::Num(i as f64)),
        (FieldKind::Number, Some(Raw::UInt(u))) => Ok(Scalar::Num(u as f64)),
        (FieldKind::Number, Some(Raw::Scalar(Scalar::Num(n)))) => Ok(Scalar::Num(n)),
        (FieldKind::Number, None | Some(Raw::Scalar(Scalar::Null))) => {
            Err(Rejection::Missing(name.to_owned()))
        }
        (FieldKind::Number, Some(other)) => Err(wrong("a number", &other)),
        (FieldKind::Scalar, None) => Ok(Scalar::Null),
        (FieldKind::Scalar, Some(Raw::Int(i))) => Ok(Scalar::Num(i as f64)),
        (FieldKind::Scalar, Some(Raw::UInt(u))) => Ok(Scalar::Num(u as f64)),
        (FieldKind::Scalar, Some(Raw::Scalar(s))) => Ok(s),
        (FieldKind::Scalar, Some(other)) => Err(wrong("a string, number or boolean", &other)),
    }
}

/// Parses an RFC 3339 timestamp into epoch milliseconds (rounded to the nearest millisecond).
pub fn parse_rfc3339_ms(s: &str) -> Result<u64, String> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("`{s}` is not an RFC 3339 time ({e})"))?;
    let nanos = t.unix_timestamp_nanos();
    if nanos < 0 {
        return Err(format!("`{s}` is before 1970-01-01T00:00:00Z"));
    }
    u64::try_from((nanos + 500_000) / 1_000_000).map_err(|_| format!("`{s}` is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> EventSchema {
        EventSchema {
            entity: "card_id".into(),
            event_time: "ts".into(),
            fields: vec![
                ("amount".into(), FieldKind::Number),
                ("merchant".into(), FieldKind::Scalar),
            ],
            checks: Vec::new(),
        }
    }

    #[test]
    fn declared_types_are_checked_with_the_field_named() {
        let mut schema = schema();
        schema.checks = vec![
            FieldCheck {
                name: "event_id".into(),
                ty: CheckedType::Integer,
                required: true,
            },
            FieldCheck {
                name: "amount".into(),
                ty: CheckedType::Number,
                required: true,
            },
            FieldCheck {
                name: "country".into(),
                ty: CheckedType::String,
                required: false,
            },
        ];
        let ok = br#"{"event_id":7,"card_id":"c1","ts":1000,"amount":1.5,"country":"US"}"#;
        let d = schema.decode(ok).expect("valid");
        assert_eq!(d.values.len(), 2, "checked-only fields are not carried");
        assert!(
            schema
                .decode(br#"{"event_id":7,"card_id":"c1","ts":1000,"amount":1.5}"#)
                .is_ok(),
            "an optional field may be absent"
        );
        let err = schema
            .decode(br#"{"card_id":"c1","ts":1000,"amount":1.5}"#)
            .expect_err("required");
        assert_eq!(err, Rejection::Missing("event_id".into()));
        let err = schema
            .decode(br#"{"event_id":7.5,"card_id":"c1","ts":1000,"amount":1.5}"#)
            .expect_err("not an integer");
        assert!(err.to_string().contains("event_id"), "{err}");
        let err = schema
            .decode(br#"{"event_id":7,"card_id":"c1","ts":1000,"amount":1.5,"country":3}"#)
            .expect_err("not a string");
        assert!(
            err.to_string().contains("`country`: expected a string"),
            "{err}"
        );
    }

    #[test]
    fn a_field_named_as_the_entity_or_time_reads_their_values() {
        let mut schema = schema();
        schema.fields.push(("card_id".into(), FieldKind::Scalar));
        schema.fields.push(("ts".into(), FieldKind::Scalar));
        let d = schema
            .decode(br#"{"card_id":42,"ts":1000,"amount":1,"merchant":"m"}"#)
            .expect("valid event");
        assert_eq!(d.entity, "42");
        assert_eq!(d.ts_ms, 1000);
        assert_eq!(d.values[2], Scalar::Num(42.0));
        assert_eq!(d.values[3], Scalar::Num(1000.0));
    }

    #[test]
    fn decodes_a_valid_event() {
        let d = schema()
            .decode(br#"{"event_id":1,"card_id":"c1","ts":1000,"amount":12.5,"merchant":"m1","x":{"a":[1]}}"#)
            .expect("valid event");
        assert_eq!(d.entity, "c1");
        assert_eq!(d.ts_ms, 1000);
        assert_eq!(d.values, vec![Scalar::Num(12.5), Scalar::Str("m1".into())]);
    }

    #[test]
    fn integer_entities_and_rfc3339_times() {
        let d = schema()
            .decode(br#"{"card_id":42,"ts":"2026-01-01T00:00:01.5Z","amount":1}"#)
            .expect("valid event");
        assert_eq!(d.entity, "42");
        assert_eq!(d.ts_ms, 1_767_225_601_500);
        assert_eq!(d.values[1], Scalar::Null);
        let big = schema()
            .decode(br#"{"card_id":18446744073709551615,"ts":1,"amount":1}"#)
            .expect("u64 entity");
        assert_eq!(big.entity, "18446744073709551615");
    }

    #[test]
    fn each_malformation_has_its_reason() {
        let s = schema();
        let cases: &[(&[u8], &str)] = &[
            (b"{not json", "not valid JSON"),
            (b"[1,2]", "expected a JSON object"),
            (br#"{"ts":1,"amount":1}"#, "missing field `card_id`"),
            (br#"{"card_id":"c","amount":1}"#, "missing field `ts`"),
            (br#"{"card_id":"c","ts":1}"#, "missing field `amount`"),
            (
                br#"{"card_id":1.5,"ts":1,"amount":1}"#,
                "field `card_id`: expected a string or an integer",
            ),
            (
                br#"{"card_id":"c","ts":true,"amount":1}"#,
                "field `ts`: expected epoch milliseconds",
            ),
            (
                br#"{"card_id":"c","ts":"yesterday","amount":1}"#,
                "field `ts`: `yesterday` is not an RFC 3339 time",
            ),
            (br#"{"card_id":"c","ts":-5,"amount":1}"#, "before 1970"),
            (
                br#"{"card_id":"c","ts":1,"amount":"12"}"#,
                "field `amount`: expected a number, found a string",
            ),
            (
                br#"{"card_id":"c","ts":1,"amount":1,"merchant":[1]}"#,
                "field `merchant`: expected a string, number or boolean, found an array",
            ),
            (
                br#"{"card_id":"c","ts":1,"amount":1} trailing"#,
                "not valid JSON",
            ),
        ];
        for (input, want) in cases {
            let got = s.decode(input).expect_err("must be rejected").to_string();
            assert!(
                got.contains(want),
                "{}: got `{got}`, want `{want}`",
                String::from_utf8_lossy(input)
            );
        }
    }
}
