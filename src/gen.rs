//! `riskflow gen`: a deterministic generator of the rejected-loans layout.
//!
//! The same seed, row count and years give the same bytes. Year sizes follow the real file's
//! growth; dates ascend within each year as in the real file. Every file has empty and zero
//! scores, titles with commas, doubled quotes and non-ASCII text; with `quirks` about 1% of the
//! records are malformed (bad date, score or amount, wrong field count, invalid UTF-8) and some
//! titles span lines.

use crate::record::{days_in_month, HEADER};
use flate2::write::GzEncoder;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

/// Approximate rows per year in `rejected_2007_to_2018Q4.csv` (27.6 million in all).
const YEAR_WEIGHTS: [(u32, u64); 12] = [
    (2007, 5_300),
    (2008, 21_000),
    (2009, 52_000),
    (2010, 111_000),
    (2011, 218_000),
    (2012, 336_000),
    (2013, 760_000),
    (2014, 1_900_000),
    (2015, 2_900_000),
    (2016, 4_400_000),
    (2017, 6_000_000),
    (2018, 10_900_000),
];

const TITLES: &[&str] = &[
    "Wedding Covered but No Honeymoon",
    "debt_consolidation",
    "credit_card",
    "Pay Off credit Cards/Better credit score",
    "I.T. Consulting Operating Capital",
    "home_improvement",
    "major_purchase",
    "renewable_energy",
    "other",
    "Cars, bikes and more",
    "Consolidation, finally",
    "The \"best\" loan ever",
    "Café crédit à la maison",
    "Mañana es otro día",
    "家族のための融資",
    "Umzug – neue Wohnung",
    "small business",
    "",
];

const STATES: &[&str] = &[
    "NM", "MD", "IN", "MA", "RI", "FL", "PA", "AL", "LA", "WA", "AR", "MN", "NC", "CA", "NY", "TX",
    "IL", "GA", "OH", "NJ",
];
const EMPLOYMENT: &[&str] = &[
    "< 1 year",
    "1 year",
    "2 years",
    "3 years",
    "4 years",
    "5 years",
    "6 years",
    "7 years",
    "8 years",
    "9 years",
    "10+ years",
    "",
];
const AMOUNTS: &[u32] = &[
    1000, 1500, 2000, 2500, 3000, 3900, 5000, 7500, 9000, 10000, 12000, 15000, 20000, 25000, 35000,
];

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenOptions {
    pub rows: u64,
    pub first_year: u32,
    pub last_year: u32,
    pub seed: u64,
    /// Add malformed records and multi-line titles.
    pub quirks: bool,
    /// End lines with CRLF.
    pub crlf: bool,
    /// Start with a UTF-8 byte-order mark.
    pub bom: bool,
}

/// What was generated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GenSummary {
    pub rows: u64,
    /// Records written malformed on purpose.
    pub malformed: u64,
    pub per_year: Vec<(u32, u64)>,
}

/// splitmix64: small, fast, and stable across versions (unlike a library RNG).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// A well-mixed 64-bit hash of `x` (one splitmix64 step), e.g. for keys that look random.
pub fn mix(x: u64) -> u64 {
    Rng(x).next()
}

/// Splits `rows` over the years in proportion to the real file (largest remainder), giving each
/// year at least one row when there are enough rows.
pub fn rows_per_year(rows: u64, first_year: u32, last_year: u32) -> Vec<(u32, u64)> {
    let weight = |year: u32| {
        let clamped = year.clamp(YEAR_WEIGHTS[0].0, YEAR_WEIGHTS[YEAR_WEIGHTS.len() - 1].0);
        YEAR_WEIGHTS
            .iter()
            .find(|(y, _)| *y == clamped)
            .map_or(1, |(_, w)| *w)
    };
    let years: Vec<u32> = (first_year..=last_year).collect();
    let total_weight: u64 = years.iter().map(|&y| weight(y)).sum();
    let floor_of =
        |y: u32| (u128::from(rows) * u128::from(weight(y)) / u128::from(total_weight)) as u64;
    let mut counts: Vec<(u32, u64)> = years.iter().map(|&y| (y, floor_of(y))).collect();
    let left = rows - counts.iter().map(|(_, c)| c).sum::<u64>();
    let mut by_remainder: Vec<usize> = (0..counts.len()).collect();
    by_remainder.sort_by_key(|&i| {
        let y = counts[i].0;
        std::cmp::Reverse(u128::from(rows) * u128::from(weight(y)) % u128::from(total_weight))
    });
    for &i in by_remainder.iter().cycle().take(left as usize) {
        counts[i].1 += 1;
    }
    // Lift empty years to one row, taking from the largest.
    if rows >= years.len() as u64 {
        while let Some(empty) = counts.iter().position(|(_, c)| *c == 0) {
            let largest = (0..counts.len())
                .max_by_key(|&i| counts[i].1)
                .expect("non-empty");
            counts[largest].1 -= 1;
            counts[empty].1 += 1;
        }
    }
    counts
}

/// Writes a generated file to `path` (gzip when it ends in `.gz`).
pub fn generate(options: &GenOptions, path: &Path) -> io::Result<GenSummary> {
    let file = BufWriter::with_capacity(1 << 20, File::create(path)?);
    if path.extension().is_some_and(|e| e == "gz") {
        let mut gz = GzEncoder::new(file, flate2::Compression::fast());
        let summary = write_records(options, &mut gz)?;
        gz.finish()?.flush()?;
        Ok(summary)
    } else {
        let mut file = file;
        let summary = write_records(options, &mut file)?;
        file.flush()?;
        Ok(summary)
    }
}

/// Writes the header and records to `out`.
pub fn write_records(options: &GenOptions, out: &mut impl Write) -> io::Result<GenSummary> {
    let newline: &[u8] = if options.crlf { b"\r\n" } else { b"\n" };
    if options.bom {
        out.write_all("\u{feff}".as_bytes())?;
    }
    out.write_all(HEADER.as_bytes())?;
    out.write_all(newline)?;
    let mut rng = Rng(options.seed);
    let per_year = rows_per_year(options.rows, options.first_year, options.last_year);
    let mut summary = GenSummary {
        per_year: per_year.clone(),
        ..GenSummary::default()
    };
    let mut line = Vec::with_capacity(256);
    for (year, count) in per_year {
        let days: u32 = (1..=12).map(|m| days_in_month(year, m)).sum();
        for j in 0..count {
            let day_of_year = (j * u64::from(days) / count) as u32;
            let (month, day) = month_day(year, day_of_year);
            line.clear();
            let malformed = write_record(&mut line, &mut rng, options.quirks, year, month, day);
            summary.malformed += u64::from(malformed);
            summary.rows += 1;
            out.write_all(&line)?;
            out.write_all(newline)?;
        }
    }
    Ok(summary)
}

fn month_day(year: u32, mut day_of_year: u32) -> (u32, u32) {
    for month in 1..=12 {
        let days = days_in_month(year, month);
        if day_of_year < days {
            return (month, day_of_year + 1);
        }
        day_of_year -= days;
    }
    (12, 31)
}

/// Appends one record; returns whether it was made malformed on purpose.
fn write_record(
    line: &mut Vec<u8>,
    rng: &mut Rng,
    quirks: bool,
    year: u32,
    month: u32,
    day: u32,
) -> bool {
    // Which quirk, if any: 1% malformed in five kinds, 0.5% multi-line titles.
    let quirk = if quirks { rng.below(1000) } else { 1000 };
    let amount = *rng.pick(AMOUNTS);
    if quirk == 0 {
        line.extend_from_slice(b"ten thousand");
    } else {
        write!(line, "{amount}.0").expect("vec");
    }
    line.push(b',');
    match quirk {
        1 => write!(line, "{year}-02-30").expect("vec"),
        2 => write!(line, "{day:02}/{month:02}/{year}").expect("vec"),
        _ => write!(line, "{year}-{month:02}-{day:02}").expect("vec"),
    }
    line.push(b',');
    match quirk {
        3 => line.extend_from_slice(b"Caf\xe9 latin-1 title"),
        10..=14 => line.extend_from_slice(b"\"Two lines,\nsecond \"\"line\"\"\""),
        15..=19 => line.extend_from_slice(b"27\" monitor for work"),
        _ => crate::sink::push_csv_field(line, rng.pick(TITLES).as_bytes()),
    }
    line.push(b',');
    let score_roll = rng.below(100);
    match quirk {
        4 => line.extend_from_slice(b"n/a"),
        _ if score_roll < 8 => {}
        _ if score_roll < 11 => line.extend_from_slice(b"0.0"),
        _ => {
            let score = 430 + rng.below(140) + rng.below(140) + rng.below(140);
            write!(line, "{score}.0").expect("vec");
        }
    }
    let dti = rng.below(5000);
    let dti_text = match dti % 10 {
        0 => "-1%".to_owned(),
        1 => "0%".to_owned(),
        _ => format!("{}%", dti as f64 / 100.0),
    };
    write!(
        line,
        ",{dti_text},{:03}xx,{},{}",
        rng.below(1000),
        rng.pick(STATES),
        rng.pick(EMPLOYMENT)
    )
    .expect("vec");
    if quirk != 5 {
        line.extend_from_slice(b",0.0");
    }
    quirk <= 5
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn year_sizes_grow_and_add_up() {
        let years = rows_per_year(100_000, 2007, 2013);
        assert_eq!(years.iter().map(|(_, c)| c).sum::<u64>(), 100_000);
        assert!(years.windows(2).all(|w| w[0].1 < w[1].1), "{years:?}");
        let few = rows_per_year(12, 2007, 2018);
        assert!(few.iter().all(|(_, c)| *c >= 1), "{few:?}");
        assert_eq!(few.iter().map(|(_, c)| c).sum::<u64>(), 12);
    }

    #[test]
    fn same_seed_same_bytes() {
        let options = GenOptions {
            rows: 2000,
            first_year: 2007,
            last_year: 2009,
            seed: 7,
            quirks: true,
            crlf: false,
            bom: false,
        };
        let (mut a, mut b) = (Vec::new(), Vec::new());
        write_records(&options, &mut a).unwrap();
        write_records(&options, &mut b).unwrap();
        assert_eq!(a, b);
        let mut c = Vec::new();
        write_records(&GenOptions { seed: 8, ..options }, &mut c).unwrap();
        assert_ne!(a, c);
    }
}
