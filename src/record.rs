//! The rejected-loans record layout (DESIGN §1): the header, the stored column names, the parsed
//! row, the dead letter, and the calendar date type used for year filters and version stamping.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The exact header of `rejected_2007_to_2018Q4.csv` / `RejectStatsA.csv`.
pub const HEADER: &str = "Amount Requested,Application Date,Loan Title,Risk_Score,Debt-To-Income Ratio,Zip Code,State,Employment Length,Policy Code";

/// Number of fields in a record.
pub const FIELD_COUNT: usize = 9;

/// Stored names of the nine source columns, in source order.
pub const BASE_COLUMNS: [&str; FIELD_COUNT] = [
    "amount_requested",
    "application_date",
    "loan_title",
    "risk_score",
    "debt_to_income_ratio",
    "zip_code",
    "state",
    "employment_length",
    "policy_code",
];

/// A calendar date stored as `yyyymmdd`, so that ordering is chronological.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Date(u32);

impl Date {
    /// Builds a date, checking that it exists in the proleptic Gregorian calendar.
    pub fn from_ymd(year: u32, month: u32, day: u32) -> Option<Date> {
        if !(1..=9999).contains(&year) || !(1..=12).contains(&month) || day == 0 {
            return None;
        }
        if day > days_in_month(year, month) {
            return None;
        }
        Some(Date(year * 10_000 + month * 100 + day))
    }

    /// Parses exactly `YYYY-MM-DD`.
    pub fn parse(text: &str) -> Option<Date> {
        let b = text.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return None;
        }
        let num = |s: &[u8]| -> Option<u32> {
            s.iter().try_fold(0u32, |acc, &c| {
                c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
            })
        };
        Date::from_ymd(num(&b[0..4])?, num(&b[5..7])?, num(&b[8..10])?)
    }

    pub fn year(self) -> u32 {
        self.0 / 10_000
    }

    pub fn month(self) -> u32 {
        self.0 / 100 % 100
    }

    pub fn day(self) -> u32 {
        self.0 % 100
    }

    /// Days since 2000-01-01 (negative before), as PostgreSQL's binary `date` counts them.
    pub fn days_since_2000(self) -> i32 {
        // Days from civil (H. Hinnant's algorithm), with years starting in March.
        let (y, m, d) = (self.year() as i64, self.month() as i64, self.day() as i64);
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days_since_1970 = era * 146_097 + doe - 719_468;
        (days_since_1970 - 10_957) as i32
    }

    /// Writes `YYYY-MM-DD` into `buf` without allocating.
    pub fn write_iso(self, buf: &mut [u8; 10]) -> &str {
        let digits = |n: u32, out: &mut [u8]| {
            let mut n = n;
            for b in out.iter_mut().rev() {
                *b = b'0' + (n % 10) as u8;
                n /= 10;
            }
        };
        digits(self.year(), &mut buf[0..4]);
        buf[4] = b'-';
        digits(self.month(), &mut buf[5..7]);
        buf[7] = b'-';
        digits(self.day(), &mut buf[8..10]);
        std::str::from_utf8(buf).expect("ASCII digits")
    }
}

/// Days in `month` of `year`.
pub fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        _ => 28,
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02}",
            self.year(),
            self.month(),
            self.day()
        )
    }
}

impl std::str::FromStr for Date {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Date::parse(s).ok_or_else(|| format!("`{s}` is not a date of the form YYYY-MM-DD"))
    }
}

/// An inclusive range of application years, written `2008-2009`, `2008-` or `2007`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct YearRange {
    pub first: u32,
    pub last: u32,
}

impl YearRange {
    pub const ALL: YearRange = YearRange {
        first: 0,
        last: u32::MAX,
    };

    pub fn contains(&self, year: u32) -> bool {
        (self.first..=self.last).contains(&year)
    }

    /// The first and last day of the range (open ends clamped to years 1 and 9999).
    pub fn dates(&self) -> (Date, Date) {
        let year = |y: u32| y.clamp(1, 9999);
        (
            Date::from_ymd(year(self.first), 1, 1).expect("a valid date"),
            Date::from_ymd(year(self.last), 12, 31).expect("a valid date"),
        )
    }
}

impl std::str::FromStr for YearRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("`{s}` is not a year range such as 2008-2009, 2008- or 2007");
        let year = |t: &str| t.trim().parse::<u32>().map_err(|_| bad());
        let range = match s.split_once('-') {
            None => YearRange {
                first: year(s)?,
                last: year(s)?,
            },
            Some((a, "")) => YearRange {
                first: year(a)?,
                last: u32::MAX,
            },
            Some(("", b)) => YearRange {
                first: 0,
                last: year(b)?,
            },
            Some((a, b)) => YearRange {
                first: year(a)?,
                last: year(b)?,
            },
        };
        if range.first > range.last {
            return Err(bad());
        }
        Ok(range)
    }
}

impl fmt::Display for YearRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.first, self.last) {
            (0, u32::MAX) => write!(f, "all years"),
            (a, u32::MAX) => write!(f, "{a}-"),
            (a, b) if a == b => write!(f, "{a}"),
            (a, b) => write!(f, "{a}-{b}"),
        }
    }
}

/// Indices of the text columns inside [`LoanRow::text`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TextField {
    LoanTitle = 0,
    DebtToIncomeRatio = 1,
    ZipCode = 2,
    State = 3,
    EmploymentLength = 4,
    PolicyCode = 5,
}

impl TextField {
    pub const ALL: [TextField; 6] = [
        TextField::LoanTitle,
        TextField::DebtToIncomeRatio,
        TextField::ZipCode,
        TextField::State,
        TextField::EmploymentLength,
        TextField::PolicyCode,
    ];

    /// The text columns that follow `risk_score`, in column order.
    pub const AFTER_RISK_SCORE: [TextField; 5] = [
        TextField::DebtToIncomeRatio,
        TextField::ZipCode,
        TextField::State,
        TextField::EmploymentLength,
        TextField::PolicyCode,
    ];

    /// The column's name in the store (`state`, `zip_code`, …).
    pub fn column(self) -> &'static str {
        match self {
            TextField::LoanTitle => "loan_title",
            TextField::DebtToIncomeRatio => "debt_to_income_ratio",
            TextField::ZipCode => "zip_code",
            TextField::State => "state",
            TextField::EmploymentLength => "employment_length",
            TextField::PolicyCode => "policy_code",
        }
    }

    pub fn from_column(name: &str) -> Option<TextField> {
        TextField::ALL.into_iter().find(|f| f.column() == name)
    }
}

/// One well-formed application: its source position, its numbers, and where its six text
/// columns lie in the text buffer of its [`LoanBatch`] (`spans[i]..spans[i + 1]` is the `i`-th,
/// see [`TextField`]). Rows carry no allocation of their own.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoanRow {
    /// Source position: the data-record number in the source, 1-based, header excluded.
    pub row: u64,
    pub amount_requested: Option<f64>,
    pub application_date: Date,
    pub risk_score: Option<f64>,
    pub spans: [u32; 7],
}

impl LoanRow {
    /// The field's text, read from the buffer the row was parsed into.
    pub fn text<'t>(&self, buffer: &'t str, field: TextField) -> &'t str {
        &buffer[self.text_span(field)]
    }

    /// The field's UTF-8 bytes (for writers; skips the char-boundary checks of `text`).
    pub fn text_bytes<'t>(&self, buffer: &'t str, field: TextField) -> &'t [u8] {
        &buffer.as_bytes()[self.text_span(field)]
    }

    /// Where the field lies in the buffer the row was parsed into.
    pub fn text_span(&self, field: TextField) -> std::ops::Range<usize> {
        let i = field as usize;
        self.spans[i] as usize..self.spans[i + 1] as usize
    }

    /// Where all six text fields lie, side by side, in that buffer.
    pub fn all_text_span(&self) -> std::ops::Range<usize> {
        self.spans[0] as usize..self.spans[6] as usize
    }
}

/// The `_row` order of the rows of several batches, each in increasing `_row` order, as
/// `(batch, index)` pairs; `None` when the batches are runs that already follow each other (a
/// file's chunks), so the caller can walk them as they are. Kafka batches, each holding every
/// n-th row of a partition, interleave and are merged.
pub fn merged_row_order<'a>(
    batches: impl ExactSizeIterator<Item = &'a [LoanRow]> + Clone,
) -> Option<Vec<(u32, u32)>> {
    let mut previous_last = None;
    let runs_in_order = batches.clone().all(|rows| {
        let in_order = previous_last < rows.first().map(|r| r.row);
        previous_last = rows.last().map(|r| r.row).or(previous_last);
        in_order
    });
    if runs_in_order {
        return None;
    }
    let batches: Vec<&[LoanRow]> = batches.collect();
    placed_row_order(&batches).or_else(|| Some(sorted_row_order(&batches)))
}

/// The merged order by placing each row at its offset from the least `_row`: linear, for
/// batches whose rows cover most of their span (a Kafka epoch's partitions, each holding every
/// n-th row); `None` when the span is sparse or two rows share a number (left to sorting).
fn placed_row_order(batches: &[&[LoanRow]]) -> Option<Vec<(u32, u32)>> {
    const EMPTY: (u32, u32) = (u32::MAX, u32::MAX);
    let rows: usize = batches.iter().map(|rows| rows.len()).sum();
    let least = batches
        .iter()
        .filter_map(|rows| rows.first())
        .map(|r| r.row)
        .min()?;
    let most = batches
        .iter()
        .filter_map(|rows| rows.last())
        .map(|r| r.row)
        .max()?;
    let span = usize::try_from(most - least + 1).ok()?;
    if span > rows.saturating_mul(4) {
        return None;
    }
    let mut slots = vec![EMPTY; span];
    for (b, rows) in batches.iter().enumerate() {
        for (i, loan) in rows.iter().enumerate() {
            let slot = &mut slots[(loan.row - least) as usize];
            if *slot != EMPTY {
                return None;
            }
            *slot = (b as u32, i as u32);
        }
    }
    slots.retain(|slot| *slot != EMPTY);
    Some(slots)
}

/// The merged order by sorting every row by `_row`.
fn sorted_row_order(batches: &[&[LoanRow]]) -> Vec<(u32, u32)> {
    let mut order: Vec<(u64, u32, u32)> = batches
        .iter()
        .enumerate()
        .flat_map(|(b, rows)| {
            rows.iter()
                .enumerate()
                .map(move |(i, loan)| (loan.row, b as u32, i as u32))
        })
        .collect();
    order.sort_unstable();
    order.into_iter().map(|(_, b, i)| (b, i)).collect()
}

/// Consecutive rows whose text columns share one buffer: the unit the dataflow moves.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LoanBatch {
    pub text: String,
    #[serde(with = "packed_rows")]
    pub rows: Vec<LoanRow>,
}

/// How a batch's rows cross between the processes of a cluster: one byte string of fixed-size
/// little-endian records instead of a dozen serializer calls per row. (Every row parsed on one
/// process crosses to the window worker's; field by field, encoding them took about a quarter
/// of the sending worker's time, and timely encodes each message twice: once to size it.)
mod packed_rows {
    use super::{Date, LoanRow};
    use serde::de::{Error, Visitor};
    use serde::{Deserializer, Serializer};

    /// `row`, a presence bit per number, `amount_requested`, `risk_score`, the date, the spans.
    const ROW_BYTES: usize = 8 + 1 + 8 + 8 + 4 + 7 * 4;

    pub fn serialize<S: Serializer>(rows: &[LoanRow], serializer: S) -> Result<S::Ok, S::Error> {
        let mut bytes = vec![0; rows.len() * ROW_BYTES];
        for (record, row) in bytes.chunks_exact_mut(ROW_BYTES).zip(rows) {
            record[..8].copy_from_slice(&row.row.to_le_bytes());
            record[8] =
                u8::from(row.amount_requested.is_some()) | u8::from(row.risk_score.is_some()) << 1;
            record[9..17].copy_from_slice(&row.amount_requested.unwrap_or(0.0).to_le_bytes());
            record[17..25].copy_from_slice(&row.risk_score.unwrap_or(0.0).to_le_bytes());
            record[25..29].copy_from_slice(&row.application_date.0.to_le_bytes());
            for (at, span) in record[29..].chunks_exact_mut(4).zip(row.spans) {
                at.copy_from_slice(&span.to_le_bytes());
            }
        }
        serializer.serialize_bytes(&bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<LoanRow>, D::Error> {
        deserializer.deserialize_bytes(RowsVisitor)
    }

    struct RowsVisitor;

    impl Visitor<'_> for RowsVisitor {
        type Value = Vec<LoanRow>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "rows packed as {ROW_BYTES}-byte records")
        }

        fn visit_bytes<E: Error>(self, bytes: &[u8]) -> Result<Vec<LoanRow>, E> {
            if !bytes.len().is_multiple_of(ROW_BYTES) {
                return Err(E::invalid_length(bytes.len(), &self));
            }
            Ok(bytes.chunks_exact(ROW_BYTES).map(unpack).collect())
        }
    }

    fn unpack(record: &[u8]) -> LoanRow {
        let u64_at =
            |at: usize| u64::from_le_bytes(record[at..at + 8].try_into().expect("8 bytes"));
        let u32_at =
            |at: usize| u32::from_le_bytes(record[at..at + 4].try_into().expect("4 bytes"));
        let present = record[8];
        let number = |bit: u8, at: usize| (present & bit != 0).then(|| f64::from_bits(u64_at(at)));
        LoanRow {
            row: u64_at(0),
            amount_requested: number(1, 9),
            risk_score: number(2, 17),
            application_date: Date(u32_at(25)),
            spans: std::array::from_fn(|i| u32_at(29 + 4 * i)),
        }
    }
}

impl LoanBatch {
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn first_row(&self) -> Option<u64> {
        self.rows.first().map(|r| r.row)
    }

    pub fn iter(&self) -> impl Iterator<Item = RowRef<'_>> + '_ {
        self.rows.iter().map(|loan| RowRef {
            loan,
            buffer: &self.text,
        })
    }
}

/// A row together with the buffer holding its text.
#[derive(Clone, Copy, Debug)]
pub struct RowRef<'a> {
    pub loan: &'a LoanRow,
    pub buffer: &'a str,
}

impl<'a> RowRef<'a> {
    pub fn text(&self, field: TextField) -> &'a str {
        self.loan.text(self.buffer, field)
    }

    pub fn text_bytes(&self, field: TextField) -> &'a [u8] {
        self.loan.text_bytes(self.buffer, field)
    }

    /// A copy that owns just this row's text.
    pub fn to_owned_row(&self) -> (LoanRow, String) {
        let all = self.loan.all_text_span();
        let mut loan = *self.loan;
        loan.spans.iter_mut().for_each(|s| *s -= all.start as u32);
        (loan, self.buffer[all].to_owned())
    }
}

impl std::ops::Deref for RowRef<'_> {
    type Target = LoanRow;
    fn deref(&self) -> &LoanRow {
        self.loan
    }
}

// Rows are ordered by source position only; the store keys on it.
impl Eq for LoanRow {}
impl PartialOrd for LoanRow {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for LoanRow {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.row.cmp(&other.row)
    }
}

/// A record that could not be read, kept with its raw bytes so nothing is lost.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub row: u64,
    /// The application date, when the record got far enough to have one (so year filters can
    /// still apply to it).
    pub application_date: Option<Date>,
    pub reason: Reason,
    /// What exactly was wrong, for a person.
    pub detail: String,
    #[serde(with = "serde_bytes")]
    pub raw: Vec<u8>,
}

/// Why a record was dead-lettered; stored as its stable code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Reason {
    InvalidUtf8,
    FieldCount,
    UnterminatedQuote,
    BadDate,
    BadRiskScore,
    BadAmount,
    Oversized,
    BadMessage,
}

impl Reason {
    pub fn code(self) -> &'static str {
        match self {
            Reason::InvalidUtf8 => "invalid_utf8",
            Reason::FieldCount => "field_count",
            Reason::UnterminatedQuote => "unterminated_quote",
            Reason::BadDate => "bad_application_date",
            Reason::BadRiskScore => "bad_risk_score",
            Reason::BadAmount => "bad_amount_requested",
            Reason::Oversized => "oversized_record",
            Reason::BadMessage => "bad_message",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_crosses_between_processes_unchanged() {
        let row = |row, amount, score, date: &str, first_span| LoanRow {
            row,
            amount_requested: amount,
            application_date: Date::parse(date).unwrap(),
            risk_score: score,
            spans: std::array::from_fn(|i| first_span + 3 * i as u32),
        };
        let batch = LoanBatch {
            text: "Café,crédit,x".repeat(7),
            rows: vec![
                row(1, Some(2500.0), Some(717.0), "2008-01-01", 0),
                row(2, None, Some(-0.0), "2012-02-29", 5),
                row(
                    u64::MAX,
                    Some(f64::MIN_POSITIVE),
                    None,
                    "9999-12-31",
                    u32::MAX - 18,
                ),
                row(7, None, None, "0001-01-01", 1),
            ],
        };
        let bytes = bincode::serialize(&batch).unwrap();
        let back: LoanBatch = bincode::deserialize(&bytes).unwrap();
        assert_eq!(back, batch);
        assert!(back.rows[1].risk_score.unwrap().is_sign_negative());
        assert_eq!(
            bincode::serialized_size(&batch).unwrap(),
            bytes.len() as u64
        );

        let empty = LoanBatch::default();
        let back: LoanBatch = bincode::deserialize(&bincode::serialize(&empty).unwrap()).unwrap();
        assert_eq!(back, empty);

        // A byte string that is not whole records is refused, not misread.
        let cut = bincode::serialize(&(String::new(), serde_bytes::ByteBuf::from(vec![0u8; 56])))
            .unwrap();
        let error = bincode::deserialize::<LoanBatch>(&cut).unwrap_err();
        assert!(error.to_string().contains("57-byte records"), "{error}");
    }

    /// Rows with these numbers (the other fields do not matter to their order).
    fn loan_rows(numbers: &[u64]) -> Vec<LoanRow> {
        numbers
            .iter()
            .map(|&row| LoanRow {
                row,
                amount_requested: None,
                application_date: Date::parse("2008-01-01").unwrap(),
                risk_score: None,
                spans: [0; 7],
            })
            .collect()
    }

    #[test]
    fn batches_are_merged_only_when_they_interleave() {
        let runs = [loan_rows(&[1, 2, 3]), loan_rows(&[4, 5])];
        assert_eq!(merged_row_order(runs.iter().map(|r| &r[..])), None);
        let partitions = [loan_rows(&[1, 3, 5]), loan_rows(&[2, 4])];
        assert_eq!(
            merged_row_order(partitions.iter().map(|r| &r[..])),
            Some(vec![(0, 0), (1, 0), (0, 1), (1, 1), (0, 2)])
        );
    }

    /// Placing rows by their offset (dense spans) and sorting them (sparse spans, repeated
    /// numbers) both give the order of a plain merge that takes, again and again, the least
    /// head of the batches (the first batch on a tie).
    #[test]
    fn merged_order_equals_a_plain_merge_for_dense_sparse_and_repeated_rows() {
        let cases: Vec<Vec<Vec<u64>>> = vec![
            // Four partitions of one epoch, every fourth row, a few dead-lettered (gaps).
            (0..4)
                .map(|p| (1..=400).filter(|r| r % 4 == p && r % 37 != 0).collect())
                .collect(),
            // Two chunks of one partition, then another partition's.
            vec![vec![10, 13, 16], vec![19, 22], vec![11, 14, 17, 20]],
            // Sparse: a producer that skipped most years.
            vec![vec![5, 1_000_005], vec![7, 2_000_007]],
            // A repeated number (never sent by riskflow's producer): kept twice, in batch order.
            vec![vec![1, 3, 5], vec![3, 4]],
        ];
        for case in cases {
            let batches: Vec<Vec<LoanRow>> = case.iter().map(|c| loan_rows(c)).collect();
            let mut heads = vec![0usize; case.len()];
            let mut expected = Vec::new();
            while let Some(b) = (0..case.len())
                .filter(|&b| heads[b] < case[b].len())
                .min_by_key(|&b| (case[b][heads[b]], b))
            {
                expected.push((b as u32, heads[b] as u32));
                heads[b] += 1;
            }
            assert_eq!(
                merged_row_order(batches.iter().map(|r| &r[..])),
                Some(expected),
                "{case:?}"
            );
        }
    }

    #[test]
    fn dates_are_checked_against_the_calendar() {
        assert_eq!(Date::parse("2007-05-26").unwrap().to_string(), "2007-05-26");
        assert_eq!(
            Date::parse("0999-01-09").unwrap().write_iso(&mut [0; 10]),
            "0999-01-09"
        );
        assert!(Date::parse("2008-02-29").is_some());
        assert!(Date::parse("2007-02-29").is_none());
        assert!(Date::parse("2000-02-29").is_some());
        assert!(Date::parse("1900-02-29").is_none());
        assert!(Date::parse("2007-13-01").is_none());
        assert!(Date::parse("2007-5-26").is_none());
        assert!(Date::parse("26/05/2007").is_none());
        assert!(Date::parse("2007-05-2x").is_none());
    }

    #[test]
    fn year_ranges_parse_open_and_closed_forms() {
        assert_eq!(
            "2008-2009".parse(),
            Ok(YearRange {
                first: 2008,
                last: 2009
            })
        );
        assert_eq!(
            "2007".parse(),
            Ok(YearRange {
                first: 2007,
                last: 2007
            })
        );
        assert!("2008-".parse::<YearRange>().unwrap().contains(2018));
        assert!("2010-2008".parse::<YearRange>().is_err());
        assert!("x".parse::<YearRange>().is_err());
    }
}
