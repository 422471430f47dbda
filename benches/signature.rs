//! The cost of checking a webhook signature: `Verifier::verify` on a 1 KiB and
//! a 64 KiB body with one secret and a valid signature, and `sign` beside it.
//! Run: `cargo bench --bench signature -- --warm-up-time 1 --measurement-time 3`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or tool: a panic names what failed

use std::hint::black_box;
use std::time::{Duration, UNIX_EPOCH};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use steerhook::secret::Secret;
use steerhook::signature::{sign, Verifier};

const SECRET: &str = "whsec_bench_0123456789abcdef";
const T: u64 = 1_767_225_600;

/// A JSON-ish body of exactly `len` bytes.
fn body(len: usize) -> Vec<u8> {
    let mut b =
        br#"{"type":"run.succeeded","id":"evt_bench","data":{"run":{"id":"run_bench","pad":""#
            .to_vec();
    b.resize(len - 4, b'x');
    b.extend_from_slice(br#""}}}"#);
    assert_eq!(b.len(), len);
    b
}

fn signature(c: &mut Criterion) {
    let verifier = Verifier::new(vec![Secret::new(SECRET)], 300);
    let now = UNIX_EPOCH + Duration::from_secs(T);
    for (name, len) in [("1KiB", 1024), ("64KiB", 64 * 1024)] {
        let body = body(len);
        let header = sign(SECRET, T, &body);
        let mut group = c.benchmark_group(format!("signature/{name}"));
        group.throughput(Throughput::Bytes(len as u64));
        // verify takes the body by value, as the handler hands it over; the
        // clone that makes each input is done outside the timed part.
        group.bench_function("verify", |b| {
            b.iter_batched(
                || body.clone(),
                |owned| {
                    verifier
                        .verify(Some(black_box(header.as_bytes())), owned, now)
                        .expect("a valid signature")
                },
                BatchSize::SmallInput,
            )
        });
        group.bench_function("sign", |b| {
            b.iter(|| sign(black_box(SECRET), T, black_box(&body)))
        });
        group.finish();
    }
}

criterion_group!(benches, signature);
criterion_main!(benches);
