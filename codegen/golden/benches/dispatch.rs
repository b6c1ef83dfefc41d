//! Micro-benchmarks of the generated dispatch's per-call work that needs no connection:
//! method lookup by wire ID, request decoding and response encoding.
//! `cargo bench -p qpq-golden --bench dispatch`.
#![allow(missing_docs)]

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use prost::Message;
use qpq_golden::MethodId;
use qpq_golden::proto::{EchoReply, EchoRequest};

fn dispatch(c: &mut Criterion) {
    let mut group = c.benchmark_group("dispatch");
    group.bench_function("method_lookup", |b| {
        b.iter(|| {
            let method = MethodId::try_from(std::hint::black_box(20u16)).unwrap();
            std::hint::black_box(method.descriptor())
        });
    });
    let request = EchoRequest {
        text: "hello".into(),
        data: Bytes::from(vec![0x42u8; 64]),
    }
    .encode_to_vec();
    let request = Bytes::from(request);
    group.bench_function("decode_echo_request_64B", |b| {
        b.iter(|| std::hint::black_box(EchoRequest::decode(request.clone()).unwrap()));
    });
    group.bench_function("check_request_64B", |b| {
        b.iter(|| {
            MethodId::Echo
                .check_request(std::hint::black_box(&request))
                .unwrap()
        });
    });
    let reply = EchoReply {
        text: "hello".into(),
        data: Bytes::from(vec![0x42u8; 64]),
    };
    group.bench_function("encode_echo_reply_64B", |b| {
        b.iter(|| std::hint::black_box(Bytes::from(reply.encode_to_vec())));
    });
    group.finish();
}

criterion_group!(benches, dispatch);
criterion_main!(benches);
