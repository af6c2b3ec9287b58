//! Feature kernels: SMA and EMA per row, with 8% null scores as in the generated data.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use riskflow::features::Kernel;

fn scores(n: usize) -> Vec<Option<f64>> {
    (0..n as u64)
        .map(|i| (i % 13 != 0).then(|| (430 + (i * 7919) % 420) as f64))
        .collect()
}

fn kernels(c: &mut Criterion) {
    let input = scores(100_000);
    let mut group = c.benchmark_group("kernels");
    group.throughput(Throughput::Elements(input.len() as u64));
    for def in ["sma(50)", "sma(100)", "ema(50)"] {
        group.bench_function(def, |b| {
            b.iter(|| {
                let mut kernel = Kernel::new(&def.parse().unwrap());
                let mut last = None;
                for s in &input {
                    last = kernel.push(*s);
                }
                black_box(last)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, kernels);
criterion_main!(benches);
