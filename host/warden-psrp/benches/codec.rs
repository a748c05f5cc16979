//! The codec's share of one small Remote PowerShell call (`Get-Mailbox -ResultSize 10`): the
//! client's requests built and answers parsed down to JSON, and the server's mirror image.
//! Run: `cargo bench -p warden-psrp --bench codec`; instruction counts of the same work:
//! `bash bench/callgrind/rps.sh`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

#[path = "call/mod.rs"]
mod call;

fn codec(c: &mut Criterion) {
    let fixture = call::Fixture::new();
    let mut group = c.benchmark_group("rps small call");
    group.throughput(Throughput::Bytes(fixture.receive_response_len() as u64));
    group.bench_function("client: Command + Receive, 10 mailboxes to JSON", |b| {
        b.iter(|| black_box(fixture.client()))
    });
    group.bench_function("server: parse both, answer 10 mailboxes", |b| {
        b.iter(|| black_box(fixture.server()))
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
