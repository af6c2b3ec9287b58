//! Quote-aware splitting of a byte stream into CSV records, without parsing the fields.
//!
//! A record ends at a newline outside quotes. A quote opens a quoted section only at the start of
//! a field (RFC 4180); a quote inside an unquoted field is literal, as lenient CSV readers treat
//! it. Inside a quoted section `""` is an escaped quote. The splitter only finds boundaries; the
//! parser (`crate::parse`) decodes the fields.

use memchr::{memchr, memchr2};
use std::io::{self, Read};

/// A record longer than this is cut off at this length and handed on as is, so that a runaway
/// quote cannot make the reader hold the rest of the file in memory. The parser then dead-letters
/// it (its quotes do not balance or its field count is wrong).
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
        }
    }

    /// The next record without its newline (a trailing `\r` is kept), or `None` at the end.
    pub fn next_record(&mut self) -> io::Result<Option<&[u8]>> {
        loop {
            match scan_record(&self.buf[..self.len], self.pos) {
                Scan::End(end) => {
                    let start = self.pos;
                    self.pos = end + 1;
                    return Ok(Some(&self.buf[start..end]));
                }
                Scan::NeedMore if self.len - self.pos >= MAX_RECORD_BYTES => {
                    let start = self.pos;
                    self.pos += MAX_RECORD_BYTES;
                    return Ok(Some(&self.buf[start..self.pos]));
                }
                Scan::NeedMore if self.eof => {
                    if self.pos == self.len {
                        return Ok(None);
                    }
                    let start = self.pos;
                    self.pos = self.len;
                    return Ok(Some(&self.buf[start..self.len]));
                }
                Scan::NeedMore => self.fill()?,
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
    fn runaway_records_are_cut_at_the_cap() {
        let mut input = b"a,\"".to_vec();
        input.extend(std::iter::repeat(b'x').take(MAX_RECORD_BYTES + 10));
        let records = split(&input);
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].len(), MAX_RECORD_BYTES);
    }
}
