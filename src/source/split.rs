//! Quote-aware splitting of a byte stream into CSV records, without parsing the fields.
//!
//! A record ends at a newline outside quotes. A quote opens a quoted section only at the start of
//! a field (RFC 4180); a quote inside an unquoted field is literal, as lenient CSV readers treat
//! it. Inside a quoted section `""` is an escaped quote. The splitter only finds boundaries; the
//! parser (`crate::parse`) decodes the fields.

use memchr::{memchr, memchr2};
use std::io::{self, Read};

/// A record longer than this is not held whole: its first `MAX_RECORD_BYTES` are kept (for the
/// dead letter), the rest is scanned to find where it ends and dropped, so a 10 MB title or a
/// runaway quote never makes the reader hold the rest of the file, and later records keep their
/// positions.
pub const MAX_RECORD_BYTES: usize = 1 << 20;

const READ_SIZE: usize = 1 << 20;

/// Splits a reader into records.
pub struct RecordSplitter<R> {
    reader: R,
    buf: Vec<u8>,
    /// Start of the first record not yet returned.
    pos: usize,
    /// End of valid data in `buf`.
    len: usize,
    eof: bool,
    /// The kept head of the last record when it was oversized.
    head: Vec<u8>,
    /// The full length of the last record returned, when it was oversized.
    truncated: Option<u64>,
}

enum Scan {
    /// The record ends at this index (the newline's position).
    End(usize),
    /// The record is not complete in the buffer.
    NeedMore,
}

impl<R: Read> RecordSplitter<R> {
    pub fn new(reader: R) -> Self {
        RecordSplitter {
            reader,
            buf: vec![0; 2 * READ_SIZE],
            pos: 0,
            len: 0,
            eof: false,
            head: Vec::new(),
            truncated: None,
        }
    }

    /// The next record without its newline (a trailing `\r` is kept), or `None` at the end.
    /// An oversized record comes back as its first [`MAX_RECORD_BYTES`]; see [`Self::truncated`].
    pub fn next_record(&mut self) -> io::Result<Option<&[u8]>> {
        Ok(self.next_record_sized()?.map(|(record, _)| record))
    }

    /// Like [`Self::next_record`], with the full length of a record that was cut.
    pub fn next_record_sized(&mut self) -> io::Result<Option<(&[u8], Option<u64>)>> {
        self.truncated = None;
        loop {
            match scan_record(&self.buf[..self.len], self.pos) {
                Scan::End(end) => {
                    let start = self.pos;
                    self.pos = end + 1;
                    return Ok(Some((&self.buf[start..end], None)));
                }
                Scan::NeedMore if self.len - self.pos >= MAX_RECORD_BYTES => {
                    self.skip_oversized()?;
                    return Ok(Some((&self.head, self.truncated)));
                }
                Scan::NeedMore if self.eof => {
                    if self.pos == self.len {
                        return Ok(None);
                    }
                    let start = self.pos;
                    self.pos = self.len;
                    return Ok(Some((&self.buf[start..self.len], None)));
                }
                Scan::NeedMore => self.fill()?,
            }
        }
    }

    /// The full length of the record last returned, if it was cut to [`MAX_RECORD_BYTES`].
    pub fn truncated(&self) -> Option<u64> {
        self.truncated
    }

    /// Keeps the head of the oversized record at `pos` and reads on, byte by byte, to its end.
    fn skip_oversized(&mut self) -> io::Result<()> {
        let head_end = self.pos + MAX_RECORD_BYTES;
        self.head.clear();
        self.head.extend_from_slice(&self.buf[self.pos..head_end]);
        let mut state = self
            .head
            .iter()
            .fold(Lexer::FieldStart, |state, &b| state.next(b));
        let mut total = MAX_RECORD_BYTES as u64;
        let mut i = head_end;
        loop {
            while i < self.len {
                let b = self.buf[i];
                i += 1;
                state = state.next(b);
                if state == Lexer::End {
                    self.pos = i;
                    self.truncated = Some(total);
                    return Ok(());
                }
                total += 1;
            }
            self.pos = self.len;
            self.fill()?;
            i = self.pos;
            if self.eof {
                self.truncated = Some(total);
                return Ok(());
            }
        }
    }

    /// Moves the partial record to the front and reads more bytes after it.
    fn fill(&mut self) -> io::Result<()> {
        self.buf.copy_within(self.pos..self.len, 0);
        self.len -= self.pos;
        self.pos = 0;
        if self.buf.len() - self.len < READ_SIZE {
            self.buf.resize(self.len + READ_SIZE, 0);
        }
        let n = loop {
            match self.reader.read(&mut self.buf[self.len..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        self.len += n;
        self.eof = n == 0;
        Ok(())
    }
}

/// Where a byte-at-a-time reading of a record stands; the same rules as [`scan_record`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lexer {
    FieldStart,
    Unquoted,
    Quoted,
    QuoteInQuoted,
    End,
}

impl Lexer {
    fn next(self, b: u8) -> Lexer {
        match (self, b) {
            (Lexer::Quoted, b'"') => Lexer::QuoteInQuoted,
            (Lexer::Quoted, _) => Lexer::Quoted,
            (Lexer::QuoteInQuoted, b'"') | (Lexer::FieldStart, b'"') => Lexer::Quoted,
            (_, b'\n') => Lexer::End,
            (_, b',') => Lexer::FieldStart,
            (Lexer::End, _) => Lexer::End,
            _ => Lexer::Unquoted,
        }
    }
}

/// Finds the newline ending the record that starts at `start`.
fn scan_record(buf: &[u8], start: usize) -> Scan {
    let mut i = start;
    loop {
        let Some(offset) = memchr2(b'"', b'\n', &buf[i..]) else {
            return Scan::NeedMore;
        };
        let j = i + offset;
        if buf[j] == b'\n' {
            return Scan::End(j);
        }
        let opens_quoted_field = j == start || buf[j - 1] == b',';
        if !opens_quoted_field {
            i = j + 1;
            continue;
        }
        // Skip the quoted section: find a quote not followed by another quote.
        let mut k = j + 1;
        loop {
            let Some(offset) = memchr(b'"', &buf[k..]) else {
                return Scan::NeedMore;
            };
            let q = k + offset;
            match buf.get(q + 1) {
                Some(b'"') => k = q + 2,
                Some(_) => {
                    i = q + 1;
                    break;
                }
                None => return Scan::NeedMore,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(input: &[u8]) -> Vec<String> {
        let mut splitter = RecordSplitter::new(input);
        let mut out = Vec::new();
        while let Some(record) = splitter.next_record().unwrap() {
            out.push(String::from_utf8_lossy(record).into_owned());
        }
        out
    }

    #[test]
    fn splits_on_newlines_outside_quotes() {
        assert_eq!(split(b"a,b\nc,d\n"), ["a,b", "c,d"]);
        assert_eq!(split(b"a,b\nc,d"), ["a,b", "c,d"]);
        assert_eq!(split(b"a,\"x\ny\",b\nc\n"), ["a,\"x\ny\",b", "c"]);
        assert_eq!(
            split(b"a,\"say \"\"hi\"\"\nthere\",b\nc"),
            ["a,\"say \"\"hi\"\"\nthere\",b", "c"]
        );
    }

    #[test]
    fn quotes_inside_unquoted_fields_are_literal() {
        assert_eq!(split(b"a,5\" disk,b\nc\n"), ["a,5\" disk,b", "c"]);
    }

    #[test]
    fn keeps_carriage_returns_for_the_parser() {
        assert_eq!(split(b"a,b\r\nc,d\r\n"), ["a,b\r", "c,d\r"]);
    }

    #[test]
    fn an_unterminated_quote_runs_to_the_end() {
        assert_eq!(split(b"a,\"open\nb,c\n"), ["a,\"open\nb,c\n"]);
    }

    #[test]
    fn records_spanning_buffer_refills_stay_whole() {
        let mut input = Vec::new();
        for i in 0..200_000 {
            input.extend_from_slice(format!("{i},\"t,{i}\n\"\"q\"\"\",x\n").as_bytes());
        }
        let records = split(&input);
        assert_eq!(records.len(), 200_000);
        assert_eq!(records[123_456], "123456,\"t,123456\n\"\"q\"\"\",x");
    }

    #[test]
    fn an_oversized_record_keeps_its_head_and_later_records_their_positions() {
        let mut input = b"a,\"".to_vec();
        input.extend(std::iter::repeat_n(b'x', 3 * MAX_RECORD_BYTES));
        input.extend_from_slice(b",\"\"inner\"\"\nline\",\"still\nquoted\"\nnext,record\n");
        let mut splitter = RecordSplitter::new(&input[..]);
        let first = splitter.next_record().unwrap().unwrap().to_vec();
        assert_eq!(first.len(), MAX_RECORD_BYTES);
        assert!(first.starts_with(b"a,\"xxx"));
        let full = input.iter().position(|&b| b == b'q').unwrap() + "quoted\"".len();
        assert_eq!(splitter.truncated(), Some(full as u64));
        assert_eq!(splitter.next_record().unwrap().unwrap(), b"next,record");
        assert_eq!(splitter.truncated(), None);
        assert!(splitter.next_record().unwrap().is_none());
    }

    #[test]
    fn an_unterminated_quote_ends_at_the_end_of_input_whatever_its_size() {
        let mut input = b"a,\"open".to_vec();
        input.extend(std::iter::repeat_n(b'y', 2 * MAX_RECORD_BYTES));
        input.extend_from_slice(b"\nb,c\n");
        let mut splitter = RecordSplitter::new(&input[..]);
        assert_eq!(
            splitter.next_record().unwrap().unwrap().len(),
            MAX_RECORD_BYTES
        );
        assert_eq!(splitter.truncated(), Some(input.len() as u64));
        assert!(splitter.next_record().unwrap().is_none());
    }

    #[test]
    fn the_lexer_agrees_with_the_fast_scanner() {
        let samples: [&[u8]; 6] = [
            b"a,b\n",
            b"\"x\ny\",b\n",
            b"a,5\" disk,\"q\"\"\n\"\n",
            b"\"a\"b,c\n",
            b",\"\",\n",
            b"\"\"\"\n\"\n",
        ];
        for sample in samples {
            let fast = match scan_record(sample, 0) {
                Scan::End(end) => end,
                Scan::NeedMore => panic!("complete sample"),
            };
            let mut state = Lexer::FieldStart;
            let slow = sample.iter().position(|&b| {
                state = state.next(b);
                state == Lexer::End
            });
            assert_eq!(Some(fast), slow, "{}", String::from_utf8_lossy(sample));
        }
    }
}
