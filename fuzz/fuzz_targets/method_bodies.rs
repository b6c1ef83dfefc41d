//! Every method's request decoding (what the dispatch does before any handler) on arbitrary
//! bytes: errors are fine, panics are not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qpq_schema::MethodId;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let method = MethodId::ALL[usize::from(selector) % MethodId::ALL.len()];
    let _ = method.check_request(body);
});
