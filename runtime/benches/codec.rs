//! Micro-benchmarks of the sans-IO frame codec: `cargo bench -p qpq-runtime --bench codec`.
#![allow(missing_docs)]

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use qpq_runtime::wire;

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame");
    for size in [64usize, 4096, 1 << 20] {
        let body = vec![0x42u8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function(format!("encode_request/{size}"), |b| {
            let mut buf = BytesMut::with_capacity(size + 16);
            b.iter(|| {
                buf.clear();
                wire::encode_request(200, 7, std::hint::black_box(&body), &mut buf).unwrap();
            });
        });
        let mut encoded = BytesMut::new();
        wire::encode_request(200, 7, &body, &mut encoded).unwrap();
        let encoded = encoded.freeze();
        group.bench_function(format!("decode_request/{size}"), |b| {
            b.iter(|| {
                let mut buf = BytesMut::from(&encoded[..]);
                let frame = wire::decode_request(&mut buf, |_| Ok(2 << 20))
                    .unwrap()
                    .unwrap();
                std::hint::black_box(frame);
            });
        });
    }
    group.bench_function("request_header_parse", |b| {
        let header = wire::RequestHeader {
            method_id: 200,
            req_id: 1,
            len: 64,
        }
        .to_bytes();
        b.iter(|| std::hint::black_box(wire::RequestHeader::parse(std::hint::black_box(&header))));
    });
    group.bench_function("error_body_round_trip", |b| {
        let status = wire::Status::rate_limited("too many requests for this account", 1500);
        b.iter(|| {
            let body = status.encode_body();
            std::hint::black_box(wire::Status::decode_body(status.code(), &body))
        });
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
