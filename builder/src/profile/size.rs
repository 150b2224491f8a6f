//! Byte sizes written as "32GiB", "500 GB", "512MiB" or a plain number of bytes.

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl std::str::FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (digits, unit) = s.split_at(split);
        let number: u64 = digits
            .parse()
            .map_err(|_| format!("size {s:?} does not start with a whole number"))?;
        let multiplier: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" | "K" => 1 << 10,
            "MiB" | "M" => 1 << 20,
            "GiB" | "G" => 1 << 30,
            "TiB" | "T" => 1 << 40,
            "kB" | "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "TB" => 1_000_000_000_000,
            other => {
                return Err(format!(
                    "size {s:?} has unknown unit {other:?}; use B, KiB, MiB, GiB, TiB (or kB, MB, GB, TB)"
                ))
            }
        };
        number
            .checked_mul(multiplier)
            .map(ByteSize)
            .ok_or_else(|| format!("size {s:?} is too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a size such as \"32GiB\" or a number of bytes")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// As a number of bytes, which [`ByteSize`] reads back.
impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl schemars::JsonSchema for ByteSize {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ByteSize".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A size: a number of bytes, or a whole number with a unit (B, KiB, MiB, GiB, TiB, kB, MB, GB, TB), e.g. \"32GiB\".",
            "anyOf": [
                { "type": "integer", "minimum": 0 },
                { "type": "string", "pattern": "^\\s*[0-9]+\\s*(B|K|KiB|M|MiB|G|GiB|T|TiB|kB|KB|MB|GB|TB)?\\s*$" }
            ]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::ByteSize;

    #[test]
    fn parses_binary_and_decimal_units() {
        assert_eq!("32GiB".parse(), Ok(ByteSize(32 << 30)));
        assert_eq!("512 MiB".parse(), Ok(ByteSize(512 << 20)));
        assert_eq!("1TB".parse(), Ok(ByteSize(1_000_000_000_000)));
        assert_eq!("4096".parse(), Ok(ByteSize(4096)));
    }

    #[test]
    fn rejects_bad_sizes_with_a_reason() {
        assert!("32 gigs"
            .parse::<ByteSize>()
            .unwrap_err()
            .contains("unknown unit"));
        assert!("GiB"
            .parse::<ByteSize>()
            .unwrap_err()
            .contains("whole number"));
        assert!("99999999999TiB"
            .parse::<ByteSize>()
            .unwrap_err()
            .contains("too large"));
    }
}
