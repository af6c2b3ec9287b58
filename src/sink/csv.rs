//! The CSV export: feature rows with their `_row` and `_version` in one file, dead letters in
//! `<file>.dead_letter.csv` beside it. Rows are written in epoch order, so the file is the same
//! byte for byte whatever the worker count (it carries no wall-clock column).

use super::{value_at_column, EpochBatch, Sink, SinkError, StoredRow};
use crate::plan::FeaturePlan;
use crate::record::{TextField, BASE_COLUMNS};
use crate::swar;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

pub struct CsvSink {
    path: PathBuf,
    dead_path: PathBuf,
    rows: File,
    /// Rows are formatted straight into this buffer, written out past `FLUSH_BYTES` (or before
    /// the parts other threads formatted, which are written as they are).
    buffer: Vec<u8>,
    dead: BufWriter<File>,
    /// Per version, per feature column: which of the row's values goes there.
    value_at_column: Vec<Vec<Option<usize>>>,
    /// The feature columns of the header.
    columns: Vec<String>,
    /// How many threads format an epoch's rows (see [`formatting_threads`]).
    threads: usize,
}

const FLUSH_BYTES: usize = 1 << 20;

impl CsvSink {
    pub fn create(path: &Path) -> Result<CsvSink, SinkError> {
        let mut dead_path = path.as_os_str().to_owned();
        dead_path.push(".dead_letter.csv");
        let dead_path = PathBuf::from(dead_path);
        let create = |p: &Path| {
            File::create(p)
                .map(|f| BufWriter::with_capacity(1 << 20, f))
                .map_err(|error| SinkError::Io {
                    path: p.to_owned(),
                    error,
                })
        };
        Ok(CsvSink {
            rows: File::create(path).map_err(Self::io(path))?,
            buffer: Vec::with_capacity(2 * FLUSH_BYTES),
            dead: create(&dead_path)?,
            path: path.to_owned(),
            dead_path,
            value_at_column: Vec::new(),
            columns: Vec::new(),
            threads: formatting_threads(),
        })
    }

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SinkError + '_ {
        move |error| SinkError::Io {
            path: path.to_owned(),
            error,
        }
    }
}

/// Appends `field`, quoted when it holds a comma, quote or line break.
pub fn push_csv_field(line: &mut Vec<u8>, field: &[u8]) {
    if needs_quotes(field) {
        push_quoted_csv_field(line, field);
    } else {
        line.extend_from_slice(field);
    }
}

/// Whether `text` holds a comma, quote or line break.
fn needs_quotes(text: &[u8]) -> bool {
    swar::contains_any(text, [b',', b'"', b'\n', b'\r'])
}

/// Appends `buffer[span]`. A span of up to 16 bytes with 16 bytes of buffer from its start is
/// copied as those 16 bytes, the excess then cut off: for a few bytes, cheaper than a call to
/// `memcpy`.
fn push_span(line: &mut Vec<u8>, buffer: &[u8], span: std::ops::Range<usize>) {
    const SHORT: usize = 16;
    let len = span.len();
    match buffer.get(span.start..span.start + SHORT) {
        Some(bytes) if len <= SHORT => {
            let bytes: &[u8; SHORT] = bytes.try_into().expect("16 bytes");
            line.extend_from_slice(bytes);
            line.truncate(line.len() - (SHORT - len));
        }
        _ => line.extend_from_slice(&buffer[span]),
    }
}

/// Appends `field` in quotes, its quotes doubled.
pub fn push_quoted_csv_field(line: &mut Vec<u8>, field: &[u8]) {
    line.push(b'"');
    for &b in field {
        if b == b'"' {
            line.push(b'"');
        }
        line.push(b);
    }
    line.push(b'"');
}

/// Appends a number as its shortest round-trip form (`1000.0`, `648.75`), or nothing for null.
/// Whole numbers (amounts, scores) skip the float formatter; the text is the same.
fn push_number(
    line: &mut Vec<u8>,
    value: Option<f64>,
    floats: &mut zmij::Buffer,
    integers: &mut itoa::Buffer,
) {
    let Some(v) = value else { return };
    if v.abs() < 1e15 && (v as i64) as f64 == v && !(v == 0.0 && v.is_sign_negative()) {
        line.extend_from_slice(integers.format(v as i64).as_bytes());
        line.extend_from_slice(b".0");
    } else {
        line.extend_from_slice(floats.format(v).as_bytes());
    }
}

/// Writes the buffered text to the file and empties the buffer.
fn write_out(file: &mut File, buffer: &mut Vec<u8>) -> std::io::Result<()> {
    file.write_all(buffer)?;
    buffer.clear();
    Ok(())
}

/// Rows per formatting thread at least: below that, a thread costs more than it saves.
const ROWS_PER_PART: usize = 4096;

/// How many threads format an epoch's rows (the cores, up to four: writing the text out is
/// one thread's work and would not keep up with more).
fn formatting_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}

/// Appends `rows` as CSV lines (`value_at_column`: per version, per feature column, which of
/// the row's values goes there).
fn format_rows(value_at_column: &[Vec<Option<usize>>], rows: &[StoredRow<'_>], text: &mut Vec<u8>) {
    let mut numbers = zmij::Buffer::new();
    let mut integers = itoa::Buffer::new();
    // Rows come in date order, mostly: a date is written out once for a run of rows.
    let (mut date, mut date_text) = (None, [0u8; 10]);
    for &(loan, version, values) in rows {
        let line = &mut *text;
        push_number(line, loan.amount_requested, &mut numbers, &mut integers);
        line.push(b',');
        if date != Some(loan.application_date) {
            date = Some(loan.application_date);
            loan.application_date.write_iso(&mut date_text);
        }
        line.extend_from_slice(&date_text);
        line.push(b',');
        // One look at all the row's text (its fields lie side by side) decides for each field.
        let quoting = needs_quotes(&loan.buffer.as_bytes()[loan.all_text_span()]);
        let push_text = |line: &mut Vec<u8>, field: TextField| match quoting {
            true => push_csv_field(line, loan.text_bytes(field)),
            false => push_span(line, loan.buffer.as_bytes(), loan.text_span(field)),
        };
        push_text(line, TextField::LoanTitle);
        line.push(b',');
        push_number(line, loan.risk_score, &mut numbers, &mut integers);
        for field in TextField::AFTER_RISK_SCORE {
            line.push(b',');
            push_text(line, field);
        }
        for value_index in &value_at_column[version as usize] {
            line.push(b',');
            push_number(
                line,
                value_index.and_then(|v| values[v]),
                &mut numbers,
                &mut integers,
            );
        }
        line.push(b',');
        line.extend_from_slice(integers.format(loan.row).as_bytes());
        line.push(b',');
        line.extend_from_slice(integers.format(version).as_bytes());
        line.push(b'\n');
    }
}

impl Sink for CsvSink {
    fn prepare(&mut self, plan: &FeaturePlan) -> Result<(), SinkError> {
        let columns = plan.columns();
        self.value_at_column = value_at_column(plan, &columns);
        self.columns = columns.iter().map(|(n, _)| n.clone()).collect();
        let header: Vec<&str> = BASE_COLUMNS
            .iter()
            .copied()
            .chain(columns.iter().map(|(n, _)| n.as_str()))
            .chain(["_row", "_version"])
            .collect();
        self.buffer.extend_from_slice(header.join(",").as_bytes());
        self.buffer.push(b'\n');
        writeln!(self.dead, "_row,reason,detail,raw").map_err(Self::io(&self.dead_path))
    }

    /// A new definition under an existing name goes on in the same file; a new column cannot
    /// (the header is written).
    fn evolve(&mut self, plan: &FeaturePlan) -> Result<(), SinkError> {
        let columns = plan.columns();
        if let Some((added, _)) = columns.iter().find(|(n, _)| !self.columns.contains(n)) {
            return Err(SinkError::Evolve {
                store: self.path.display().to_string(),
                version: plan.versions.len() as u32 - 1,
                why: format!("a CSV export cannot add column `{added}` after its header is written; restart the stream to write a new file"),
            });
        }
        self.value_at_column = value_at_column(plan, &columns);
        Ok(())
    }

    fn write_epoch(&mut self, batch: &EpochBatch) -> Result<(), SinkError> {
        let rows: Vec<StoredRow<'_>> = batch.rows().collect();
        let parts = self.threads.min(rows.len().div_ceil(ROWS_PER_PART)).max(1);
        let part_rows = rows.len().div_ceil(parts).max(1);
        let value_at_column = &self.value_at_column;
        let mut parts = rows.chunks(part_rows);
        let first = parts.next().unwrap_or_default();
        let (buffer, file) = (&mut self.buffer, &mut self.rows);
        std::thread::scope(|scope| {
            let rest: Vec<_> = parts
                .map(|part| {
                    scope.spawn(move || {
                        let mut text = Vec::with_capacity(part.len() * 160);
                        format_rows(value_at_column, part, &mut text);
                        text
                    })
                })
                .collect();
            format_rows(value_at_column, first, buffer);
            // The other parts go straight to the file after the buffer (no copy into it).
            for part in rest {
                let text = part.join().expect("formatting rows does not panic");
                write_out(file, buffer)?;
                file.write_all(&text)?;
            }
            Ok(())
        })
        .map_err(Self::io(&self.path))?;
        if self.buffer.len() >= FLUSH_BYTES {
            write_out(&mut self.rows, &mut self.buffer).map_err(Self::io(&self.path))?;
        }
        let mut integers = itoa::Buffer::new();
        let mut line = Vec::new();
        for dead in &batch.dead_letters {
            line.clear();
            line.extend_from_slice(integers.format(dead.row).as_bytes());
            line.push(b',');
            line.extend_from_slice(dead.reason.code().as_bytes());
            line.push(b',');
            push_csv_field(&mut line, dead.detail.as_bytes());
            line.push(b',');
            push_csv_field(&mut line, &dead.raw);
            line.push(b'\n');
            self.dead
                .write_all(&line)
                .map_err(Self::io(&self.dead_path))?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        write_out(&mut self.rows, &mut self.buffer).map_err(Self::io(&self.path))?;
        self.dead.flush().map_err(Self::io(&self.dead_path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_are_copied_exactly_whatever_their_length_and_place() {
        let buffer: Vec<u8> = (0..40).collect();
        for start in 0..=buffer.len() {
            for end in start..=buffer.len() {
                let mut line = b"before,".to_vec();
                push_span(&mut line, &buffer, start..end);
                assert_eq!(line[7..], buffer[start..end], "{start}..{end}");
                assert_eq!(&line[..7], b"before,");
            }
        }
    }

    #[test]
    fn numbers_print_like_the_float_formatter() {
        let (mut floats, mut integers) = (zmij::Buffer::new(), itoa::Buffer::new());
        for v in [
            0.0,
            -0.0,
            1000.0,
            693.0,
            -1.0,
            648.75,
            679.333_333_333_333_4,
            1e14,
            1e15,
            1e16,
            0.1,
        ] {
            let mut line = Vec::new();
            push_number(&mut line, Some(v), &mut floats, &mut integers);
            assert_eq!(
                String::from_utf8(line).unwrap(),
                zmij::Buffer::new().format(v),
                "{v}"
            );
        }
        let mut line = Vec::new();
        push_number(&mut line, None, &mut floats, &mut integers);
        assert!(line.is_empty());
    }
}
