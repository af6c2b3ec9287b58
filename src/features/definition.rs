//! The text form of a feature definition: `KIND(N) [by COLUMN] [as TYPE]`, e.g. `sma(50)`,
//! `ema(50) as real` or `sma(50) by state` (a window per value of the column).

use crate::record::TextField;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The rolling statistic a feature computes over `risk_score`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    /// Simple moving average over the last N rows (nulls skipped).
    Sma,
    /// Exponential moving average with span N (alpha = 2/(N+1)), seeded with the first score.
    Ema,
}

/// How a feature is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ColumnType {
    /// 8-byte float (the default).
    Double,
    /// 4-byte float where the store has one.
    Real,
}

impl ColumnType {
    pub fn name(self) -> &'static str {
        match self {
            ColumnType::Double => "double",
            ColumnType::Real => "real",
        }
    }
}

/// A parsed feature definition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FeatureDef {
    pub kind: Kind,
    pub window: u32,
    pub column_type: ColumnType,
    /// `by COLUMN`: one window per value of this column (`None`: one over the whole stream).
    pub key: Option<TextField>,
}

/// A definition that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a feature definition: {why} (expected e.g. `sma(50)`, `ema(50)`, `sma(50) by state` or `sma(100) as real`)")]
pub struct DefinitionError {
    pub text: String,
    pub why: &'static str,
}

/// The largest window accepted; far beyond any rolling feature in use, and it bounds memory.
const MAX_WINDOW: u32 = 1_000_000;

impl std::str::FromStr for FeatureDef {
    type Err = DefinitionError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let fail = |why| DefinitionError {
            text: text.to_owned(),
            why,
        };
        let normalized = text.trim().to_ascii_lowercase();
        let (call, column_type) = match normalized.split_once(" as ") {
            None => (normalized.as_str(), ColumnType::Double),
            Some((call, "double")) => (call, ColumnType::Double),
            Some((call, "real")) => (call, ColumnType::Real),
            Some(_) => return Err(fail("the type must be `double` or `real`")),
        };
        let (call, key) = match call.split_once(" by ") {
            None => (call, None),
            Some((call, column)) => match TextField::from_column(column.trim()) {
                Some(field) => (call, Some(field)),
                None => return Err(fail("`by` takes a text column: loan_title, debt_to_income_ratio, zip_code, state, employment_length or policy_code")),
            },
        };
        let (name, rest) = call
            .trim()
            .split_once('(')
            .ok_or_else(|| fail("missing `(`"))?;
        let args = rest.strip_suffix(')').ok_or_else(|| fail("missing `)`"))?;
        let kind = match name.trim() {
            "sma" => Kind::Sma,
            "ema" => Kind::Ema,
            _ => return Err(fail("the function must be `sma` or `ema`")),
        };
        let window: u32 = args
            .trim()
            .parse()
            .map_err(|_| fail("the window must be a whole number"))?;
        if !(1..=MAX_WINDOW).contains(&window) {
            return Err(fail("the window must be between 1 and 1000000"));
        }
        Ok(FeatureDef {
            kind,
            window,
            column_type,
            key,
        })
    }
}

impl fmt::Display for FeatureDef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::Sma => "sma",
            Kind::Ema => "ema",
        };
        write!(f, "{kind}({})", self.window)?;
        if let Some(key) = self.key {
            write!(f, " by {}", key.column())?;
        }
        if self.column_type != ColumnType::Double {
            write!(f, " as {}", self.column_type.name())?;
        }
        Ok(())
    }
}

impl Serialize for FeatureDef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for FeatureDef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_canonically() {
        for (text, canonical) in [
            ("sma(50)", "sma(50)"),
            (" EMA( 50 ) ", "ema(50)"),
            ("sma(100) as real", "sma(100) as real"),
            ("sma(100) as double", "sma(100)"),
            ("sma(50) BY state", "sma(50) by state"),
            ("ema(20) by zip_code as real", "ema(20) by zip_code as real"),
        ] {
            let def: FeatureDef = text.parse().unwrap();
            assert_eq!(def.to_string(), canonical);
        }
    }

    #[test]
    fn rejects_what_it_cannot_compute() {
        for text in [
            "sma50",
            "wma(5)",
            "sma(0)",
            "sma(x)",
            "sma(5) as int",
            "sma(5",
            "sma(5) by risk_score",
            "sma(5) by",
        ] {
            let err = text.parse::<FeatureDef>().unwrap_err();
            assert!(err.to_string().contains(text), "{err}");
        }
    }
}
