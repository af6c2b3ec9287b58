//! Decoding one raw record into a [`LoanRow`], or saying exactly why it cannot be.

use crate::record::{Date, DeadLetter, LoanRow, Reason, FIELD_COUNT};
use crate::source::Rejection;
use crate::swar;
use memchr::memchr;

/// Source column positions of the fields that are not kept as text.
const AMOUNT: usize = 0;
const DATE: usize = 1;
const SCORE: usize = 3;

/// Parses records, reusing its scratch space between calls.
#[derive(Default)]
pub struct RecordParser {
    scratch: String,
    scratch_ends: [usize; 3],
    /// Text columns decoded by [`RecordParser::application_date`], which keeps none.
    text: String,
}

/// Why a record was rejected, and its date if that much was readable.
type ParseFailure = (Reason, String, Option<Date>);

impl RecordParser {
    /// The dead letter for a record the source rejected before parsing.
    pub fn rejected(row: u64, raw: &[u8], why: &Rejection) -> DeadLetter {
        let (reason, detail) = match why {
            Rejection::Oversized { full_length } => (
                Reason::Oversized,
                format!("the record is {full_length} bytes, over the {} byte limit; its first {} bytes are kept", crate::source::MAX_RECORD_BYTES, raw.len()),
            ),
            Rejection::BadMessage { detail } => (Reason::BadMessage, detail.clone()),
        };
        DeadLetter {
            row,
            application_date: None,
            reason,
            detail,
            raw: raw.to_vec(),
        }
    }

    /// Parses the record at source position `row`, appending its text columns to `text` (left as
    /// it was when the record is rejected).
    pub fn parse(
        &mut self,
        row: u64,
        raw: &[u8],
        text: &mut String,
    ) -> Result<LoanRow, DeadLetter> {
        let start = text.len();
        self.parse_fields(row, raw, text)
            .inspect_err(|_| text.truncate(start))
            .map_err(|(reason, detail, application_date)| DeadLetter {
                row,
                application_date,
                reason,
                detail,
                raw: raw.to_vec(),
            })
    }

    /// The record's application date as [`parse`](Self::parse) reads it: the row's, or that of
    /// a record rejected after its date was read; `None` when the date cannot be read. A record
    /// without quotes is not decoded beyond its date.
    pub fn application_date(&mut self, raw: &[u8]) -> Option<Date> {
        let line = record_text(raw).ok()?;
        if let Some(commas) = plain_commas(line.as_bytes()) {
            return Date::parse(plain_field(line, &commas, DATE));
        }
        let mut text = std::mem::take(&mut self.text);
        let date = match self.parse_fields(0, raw, &mut text) {
            Ok(row) => Some(row.application_date),
            Err((_, _, date)) => date,
        };
        text.clear();
        self.text = text;
        date
    }

    fn parse_fields(
        &mut self,
        row: u64,
        raw: &[u8],
        text: &mut String,
    ) -> Result<LoanRow, ParseFailure> {
        let line = record_text(raw).map_err(|e| {
            (
                Reason::InvalidUtf8,
                format!("invalid UTF-8 at byte {}", e.valid_up_to()),
                None,
            )
        })?;
        if let Some(commas) = plain_commas(line.as_bytes()) {
            // No quotes: the fields are the text between the eight commas.
            let field = |k: usize| plain_field(line, &commas, k);
            // The six text fields (the title, then the five after the score) by source position.
            let mut spans = [text.len() as u32; 7];
            for (span, k) in spans[1..].iter_mut().zip([2, 4, 5, 6, 7, 8]) {
                text.push_str(field(k));
                *span = text.len() as u32;
            }
            return loan_row(row, field(AMOUNT), field(DATE), field(SCORE), spans);
        }
        self.scratch.clear();
        let mut spans = [text.len() as u32; 7];
        let mut rest = line;
        let mut field = 0usize;
        loop {
            if field >= FIELD_COUNT {
                let found = FIELD_COUNT + count_fields(rest);
                return Err((
                    Reason::FieldCount,
                    format!("expected {FIELD_COUNT} fields, found {found}"),
                    None,
                ));
            }
            let out = match field {
                AMOUNT | DATE | SCORE => &mut self.scratch,
                _ => &mut *text,
            };
            let more = decode_field(&mut rest, out)?;
            match field {
                AMOUNT => self.scratch_ends[0] = self.scratch.len(),
                DATE => self.scratch_ends[1] = self.scratch.len(),
                SCORE => self.scratch_ends[2] = self.scratch.len(),
                2 => spans[1] = text.len() as u32,
                _ => spans[field - 2] = text.len() as u32,
            }
            field += 1;
            if !more {
                break;
            }
        }
        if field != FIELD_COUNT {
            return Err((
                Reason::FieldCount,
                format!("expected {FIELD_COUNT} fields, found {field}"),
                None,
            ));
        }
        let [amount_end, date_end, score_end] = self.scratch_ends;
        loan_row(
            row,
            &self.scratch[..amount_end],
            &self.scratch[amount_end..date_end],
            &self.scratch[date_end..score_end],
            spans,
        )
    }
}

/// The row from its decoded number and date fields and its text spans.
fn loan_row(
    row: u64,
    amount: &str,
    date: &str,
    score: &str,
    spans: [u32; 7],
) -> Result<LoanRow, ParseFailure> {
    let application_date = Date::parse(date).ok_or_else(|| {
        (
            Reason::BadDate,
            format!("application date `{date}` is not a YYYY-MM-DD date"),
            None,
        )
    })?;
    let risk_score = parse_number(score).map_err(|()| {
        (
            Reason::BadRiskScore,
            format!("risk score `{score}` is not a number"),
            Some(application_date),
        )
    })?;
    let amount_requested = parse_number(amount).map_err(|()| {
        (
            Reason::BadAmount,
            format!("amount requested `{amount}` is not a number"),
            Some(application_date),
        )
    })?;
    Ok(LoanRow {
        row,
        amount_requested,
        application_date,
        risk_score,
        spans,
    })
}

/// A record's text, without the `\r` of a CRLF line end.
fn record_text(raw: &[u8]) -> Result<&str, std::str::Utf8Error> {
    std::str::from_utf8(raw.strip_suffix(b"\r").unwrap_or(raw))
}

/// Field `k` of a record without quotes, between the commas [`plain_commas`] found.
#[inline]
fn plain_field<'a>(line: &'a str, commas: &[usize; FIELD_COUNT - 1], k: usize) -> &'a str {
    let start = if k == 0 { 0 } else { commas[k - 1] + 1 };
    let end = commas.get(k).copied().unwrap_or(line.len());
    &line[start..end]
}

/// The positions of the eight commas of a record without quotes (the common case, whose fields
/// need no decoding); `None` when it has a quote or another number of commas (left to
/// [`decode_field`], which also says what is wrong). Looks at eight bytes at a time.
fn plain_commas(line: &[u8]) -> Option<[usize; FIELD_COUNT - 1]> {
    let mut commas = [0; FIELD_COUNT - 1];
    let mut found = 0;
    let mut at = 0;
    while at < line.len() {
        let word = swar::word_at(line, at);
        if swar::matches(word, b'"') != 0 {
            return None;
        }
        let mut comma_bits = swar::matches(word, b',');
        while comma_bits != 0 {
            *commas.get_mut(found)? = at + comma_bits.trailing_zeros() as usize / 8;
            found += 1;
            comma_bits &= comma_bits - 1;
        }
        at += 8;
    }
    (found == commas.len()).then_some(commas)
}

/// An empty field is null; anything else must be a finite number.
fn parse_number(text: &str) -> Result<Option<f64>, ()> {
    if text.is_empty() {
        return Ok(None);
    }
    if let Some(value) = parse_plain_decimal(text) {
        return Ok(Some(value));
    }
    match text.parse::<f64>() {
        Ok(value) if value.is_finite() => Ok(Some(value)),
        _ => Err(()),
    }
}

/// Powers of ten that are exact in an `f64`.
const EXACT_POWERS_OF_TEN: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// Plain decimals such as `693.0`, `1000.0` or `-12.34` with at most 15 digits: the digits and the
/// power of ten are exact, so one division rounds correctly (Clinger's fast path) and the result
/// equals the full parser's. Anything else (exponents, `+`, long mantissas) returns `None`.
fn parse_plain_decimal(text: &str) -> Option<f64> {
    let (negative, digits) = match text.as_bytes() {
        [b'-', rest @ ..] => (true, rest),
        all => (false, all),
    };
    let (mut mantissa, mut count, mut fraction_digits, mut seen_point) =
        (0u64, 0usize, 0usize, false);
    for &b in digits {
        match b {
            b'0'..=b'9' => {
                mantissa = mantissa * 10 + u64::from(b - b'0');
                count += 1;
                fraction_digits += usize::from(seen_point);
                if count > 15 {
                    return None;
                }
            }
            b'.' if !seen_point => seen_point = true,
            _ => return None,
        }
    }
    if count == 0 {
        return None;
    }
    // `693.0` is 693: no division for trailing zeros (the value is the same either way).
    while fraction_digits > 0 && mantissa % 10 == 0 {
        mantissa /= 10;
        fraction_digits -= 1;
    }
    let value = match fraction_digits {
        0 => mantissa as f64,
        digits => mantissa as f64 / EXACT_POWERS_OF_TEN[digits],
    };
    Some(if negative { -value } else { value })
}

/// Splits a record into its decoded fields, whatever their number; `None` when the record is not
/// UTF-8 or has an unterminated quote. (For re-encoding records, e.g. as JSON arrays.)
pub fn split_fields(raw: &[u8]) -> Option<Vec<String>> {
    let line = record_text(raw).ok()?;
    let mut rest = line;
    let mut fields = Vec::with_capacity(FIELD_COUNT);
    loop {
        let mut field = String::new();
        let more = decode_field(&mut rest, &mut field).ok()?;
        fields.push(field);
        if !more {
            return Some(fields);
        }
    }
}

/// Decodes the field at the start of `rest` into `out`, advances `rest` past its comma, and says
/// whether another field follows.
fn decode_field(rest: &mut &str, out: &mut String) -> Result<bool, ParseFailure> {
    let s = *rest;
    if let Some(quoted) = s.strip_prefix('"') {
        let mut body = quoted;
        loop {
            let Some(q) = memchr(b'"', body.as_bytes()) else {
                return Err((
                    Reason::UnterminatedQuote,
                    "a quoted field is never closed".to_owned(),
                    None,
                ));
            };
            out.push_str(&body[..q]);
            body = &body[q + 1..];
            if let Some(after) = body.strip_prefix('"') {
                out.push('"');
                body = after;
            } else {
                break;
            }
        }
        // Lenient: text after the closing quote belongs to the field.
        let (tail, more, next) = split_at_comma(body);
        out.push_str(tail);
        *rest = next;
        Ok(more)
    } else {
        let (field, more, next) = split_at_comma(s);
        out.push_str(field);
        *rest = next;
        Ok(more)
    }
}

fn split_at_comma(s: &str) -> (&str, bool, &str) {
    match memchr(b',', s.as_bytes()) {
        Some(i) => (&s[..i], true, &s[i + 1..]),
        None => (s, false, ""),
    }
}

/// Counts the fields in the remainder of a record (for the error message only).
fn count_fields(mut rest: &str) -> usize {
    let mut sink = String::new();
    let mut count = 0;
    loop {
        count += 1;
        sink.clear();
        match decode_field(&mut rest, &mut sink) {
            Ok(true) => continue,
            Ok(false) | Err(_) => return count,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::TextField;

    fn parse(raw: &str) -> Result<(LoanRow, String), DeadLetter> {
        let mut text = "earlier rows' text;".to_owned();
        let row = RecordParser::default().parse(7, raw.as_bytes(), &mut text)?;
        Ok((row, text))
    }

    #[test]
    fn parses_the_original_first_row() {
        let (row, text) = parse(
            "1000.0,2007-05-26,Wedding Covered but No Honeymoon,693.0,10%,481xx,NM,4 years,0.0",
        )
        .unwrap();
        assert_eq!(row.row, 7);
        assert_eq!(row.amount_requested, Some(1000.0));
        assert_eq!(row.application_date.to_string(), "2007-05-26");
        assert_eq!(row.risk_score, Some(693.0));
        assert_eq!(
            row.text(&text, TextField::LoanTitle),
            "Wedding Covered but No Honeymoon"
        );
        assert_eq!(row.text(&text, TextField::DebtToIncomeRatio), "10%");
        assert_eq!(row.text(&text, TextField::ZipCode), "481xx");
        assert_eq!(row.text(&text, TextField::State), "NM");
        assert_eq!(row.text(&text, TextField::EmploymentLength), "4 years");
        assert_eq!(row.text(&text, TextField::PolicyCode), "0.0");
    }

    #[test]
    fn decodes_quotes_commas_newlines_and_non_ascii() {
        let (row, text) =
            parse("500,2008-01-02,\"Café, \"\"big\"\"\nplans\",,5%,100xx,NY,,0.0\r").unwrap();
        assert_eq!(
            row.text(&text, TextField::LoanTitle),
            "Café, \"big\"\nplans"
        );
        assert_eq!(row.risk_score, None);
        assert_eq!(row.text(&text, TextField::EmploymentLength), "");
        assert_eq!(row.text(&text, TextField::PolicyCode), "0.0");
    }

    #[test]
    fn the_decimal_fast_path_agrees_with_the_full_parser() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut cases: Vec<String> = [
            "0",
            "0.0",
            "-0.0",
            "5.",
            ".5",
            "693.0",
            "1000.0",
            "-1",
            "0.51",
            "999999999999999",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for _ in 0..100_000 {
            let digits = (next() % 15 + 1) as usize;
            let mantissa = next() % 10u64.pow(digits as u32);
            let point = (next() % (digits as u64 + 1)) as usize;
            let text = format!("{mantissa:0digits$}");
            let (int, frac) = text.split_at(digits - point);
            let sign = if next() % 2 == 0 { "-" } else { "" };
            cases.push(format!("{sign}{int}.{frac}"));
        }
        for case in cases {
            let fast =
                parse_plain_decimal(&case).unwrap_or_else(|| panic!("{case} takes the fast path"));
            let full: f64 = case.parse().unwrap();
            assert_eq!(fast.to_bits(), full.to_bits(), "{case}");
        }
        for slow in ["1e5", "+5", "1234567890123456", ".", "-", "1.2.3", "nan"] {
            assert_eq!(parse_plain_decimal(slow), None, "{slow}");
        }
    }

    /// The records of 20,000 generated rows of 2007–2018 with quirks.
    fn generated_records(seed: u64, crlf: bool) -> Vec<Vec<u8>> {
        let options = crate::gen::GenOptions {
            rows: 20_000,
            first_year: 2007,
            last_year: 2018,
            seed,
            quirks: true,
            crlf,
            bom: false,
        };
        let mut bytes = Vec::new();
        crate::gen::write_records(&options, &mut bytes).unwrap();
        let mut splitter = crate::source::RecordSplitter::new(&bytes[..]);
        splitter.next_record().unwrap(); // header
        let mut records = Vec::new();
        while let Some(record) = splitter.next_record().unwrap() {
            records.push(record.to_vec());
        }
        records
    }

    /// Records without quotes take the comma-splitting path; the same records with every field
    /// quoted take the decoding one. Both give the same row and text.
    #[test]
    fn plain_records_parse_as_their_quoted_form() {
        let (mut parser, mut plain_rows) = (RecordParser::default(), 0);
        for record in &generated_records(3, false) {
            let record = &record[..];
            if record.contains(&b'"') {
                continue;
            }
            plain_rows += 1;
            let quoted: Vec<Vec<u8>> = record
                .split(|&b| b == b',')
                .map(|field| [&b"\""[..], field, b"\""].concat())
                .collect();
            let (mut plain_text, mut quoted_text) = (String::new(), String::new());
            let plain = parser.parse(9, record, &mut plain_text);
            let decoded = parser.parse(9, &quoted.join(&b','), &mut quoted_text);
            match (plain, decoded) {
                (Ok(a), Ok(b)) => assert_eq!((a, &plain_text), (b, &quoted_text)),
                (Err(a), Err(b)) => assert_eq!(
                    (a.reason, a.application_date),
                    (b.reason, b.application_date)
                ),
                (a, b) => panic!("{:?}: {a:?} against {b:?}", String::from_utf8_lossy(record)),
            }
        }
        assert!(plain_rows > 15_000, "{plain_rows}");
    }

    /// The date alone is the date the full parse reads, for every kind of record the generator
    /// writes (with quirks) and for records cut short around the date.
    #[test]
    fn the_date_alone_is_the_date_of_the_full_parse() {
        let mut records = generated_records(5, true);
        for extra in [
            &b"1,2008-02-30,t,1,5%,1xx,NY,1 year,0"[..],
            b"1,2008-02-03",
            b"1,2008-02-03,t,x,5%,1xx,NY,1 year,0",
            b"x,2008-02-03,t,1,5%,1xx,NY,1 year,0",
            b"1,\"2008-02-03\",t,x,5%,1xx,NY,1 year,0",
            b"1,2008-02-03,\"t,1,5%,1xx,NY,1 year,0",
            b"1,2008-02-03,t\xff,1,5%,1xx,NY,1 year,0",
            b"",
        ] {
            records.push(extra.to_vec());
        }
        let (mut parser, mut dated, mut undated) = (RecordParser::default(), 0, 0);
        for record in &records {
            let mut text = String::new();
            let full = match parser.parse(1, record, &mut text) {
                Ok(row) => Some(row.application_date),
                Err(dead) => dead.application_date,
            };
            assert_eq!(
                parser.application_date(record),
                full,
                "{}",
                String::from_utf8_lossy(record)
            );
            if full.is_some() {
                dated += 1
            } else {
                undated += 1
            }
        }
        assert!(dated > 15_000 && undated > 10, "{dated} {undated}");
    }

    #[test]
    fn a_rejected_record_leaves_the_text_buffer_as_it_was() {
        let mut text = "kept".to_owned();
        let bad =
            RecordParser::default().parse(1, b"1,2008-01-02,title,x,5%,1xx,NY,1 year,0", &mut text);
        assert!(bad.is_err());
        assert_eq!(text, "kept");
    }

    #[test]
    fn empty_amount_and_score_are_null() {
        let (row, _) = parse(",2008-01-02,t,,5%,100xx,NY,1 year,0.0").unwrap();
        assert_eq!((row.amount_requested, row.risk_score), (None, None));
    }

    #[test]
    fn rejects_with_a_reason_and_keeps_the_raw_bytes() {
        let cases = [
            (
                "1,2008-01-02,t,700,5%,1xx,NY,1 year",
                Reason::FieldCount,
                "expected 9 fields, found 8",
            ),
            (
                "1,2008-01-02,t,700,5%,1xx,NY,1 year,0,x",
                Reason::FieldCount,
                "found 10",
            ),
            (
                "1,2008-02-30,t,700,5%,1xx,NY,1 year,0",
                Reason::BadDate,
                "2008-02-30",
            ),
            (
                "1,2008-01-02,t,high,5%,1xx,NY,1 year,0",
                Reason::BadRiskScore,
                "`high`",
            ),
            (
                "1,2008-01-02,t,NaN,5%,1xx,NY,1 year,0",
                Reason::BadRiskScore,
                "NaN",
            ),
            (
                "lots,2008-01-02,t,700,5%,1xx,NY,1 year,0",
                Reason::BadAmount,
                "`lots`",
            ),
            (
                "1,2008-01-02,\"open,700,5%,1xx,NY,1 year,0",
                Reason::UnterminatedQuote,
                "never closed",
            ),
        ];
        for (raw, reason, detail) in cases {
            let dead = parse(raw).unwrap_err();
            assert_eq!(dead.reason, reason, "{raw}");
            assert!(dead.detail.contains(detail), "{raw}: {}", dead.detail);
            assert_eq!(dead.raw, raw.as_bytes());
            assert_eq!(dead.row, 7);
            let dated = matches!(reason, Reason::BadRiskScore | Reason::BadAmount);
            assert_eq!(dead.application_date.is_some(), dated, "{raw}");
        }
        let bad_utf8 = b"1,2008-01-02,caf\xe9,700,5%,1xx,NY,1 year,0";
        let dead = RecordParser::default()
            .parse(3, bad_utf8, &mut String::new())
            .unwrap_err();
        assert_eq!(dead.reason, Reason::InvalidUtf8);
        assert_eq!(dead.raw, bad_utf8);
    }
}
