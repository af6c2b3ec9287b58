//! The reader's two stages on generated records: splitting a byte stream into records, and
//! parsing records into rows.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use riskflow::parse::RecordParser;
use riskflow::source::RecordSplitter;

mod common;

fn input() -> Vec<u8> {
    common::generated(100_000, 2007, 1)
}

fn parser(c: &mut Criterion) {
    let bytes = input();
    // Records one after another in one buffer, as a source chunk holds them.
    let (mut records, mut ends) = (Vec::new(), Vec::new());
    let mut splitter = RecordSplitter::new(&bytes[..]);
    splitter.next_record().unwrap(); // header
    while let Some(r) = splitter.next_record().unwrap() {
        records.extend_from_slice(r);
        ends.push(records.len());
    }
    let mut group = c.benchmark_group("reader");
    group.throughput(Throughput::Elements(ends.len() as u64));
    group.bench_function("split_records", |b| {
        b.iter(|| {
            let mut splitter = RecordSplitter::new(&bytes[..]);
            let mut n = 0usize;
            while let Some(r) = splitter.next_record().unwrap() {
                n += r.len();
            }
            black_box(n)
        })
    });
    group.bench_function("parse_records", |b| {
        let mut parser = RecordParser::default();
        let mut text = String::new();
        b.iter(|| {
            let mut ok = 0usize;
            let mut start = 0;
            for (i, &end) in ends.iter().enumerate() {
                let record = &records[start..end];
                start = end;
                ok += usize::from(parser.parse(i as u64 + 1, record, &mut text).is_ok());
                if text.len() > 1 << 20 {
                    text.clear();
                }
            }
            black_box(ok)
        })
    });
    group.finish();
}

criterion_group!(benches, parser);
criterion_main!(benches);
