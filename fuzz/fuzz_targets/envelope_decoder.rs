//! Arbitrary bytes into the RPC envelope decoder.
//!
//! Whatever decodes must re-encode (to exactly `encoded_len` bytes, no more
//! than the input, byte for byte as prost encodes the same fields) and decode
//! again to the same envelope; re-encoding that is a fixed point. Where prost
//! also decodes the input, both must see the same fields.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use uds::rpc::__wire::Envelope;
use uds_fuzz::ProstEnvelope;

fuzz_target!(|data: &[u8]| {
    let body = Bytes::copy_from_slice(data);
    let decoded = Envelope::decode(&body);
    let theirs = ProstEnvelope::decode(data);
    let Ok(env) = decoded else {
        return;
    };
    let _ = env.method_str();
    let _ = env.err_text();

    let mut out = Vec::new();
    env.encode(&mut out);
    assert_eq!(out.len(), env.encoded_len(), "encoded_len is wrong");
    assert!(
        out.len() <= data.len(),
        "canonical encoding ({} bytes) longer than the input ({} bytes)",
        out.len(),
        data.len()
    );
    let mine = ProstEnvelope::from_envelope(&env);
    assert_eq!(out, mine.encode_to_vec(), "encoding differs from prost's");
    if let Ok(theirs) = theirs {
        assert_eq!(theirs, mine, "prost decodes other fields");
    }

    let again = Envelope::decode(&Bytes::from(out.clone())).expect("re-encoded envelope decodes");
    assert_eq!(again, env, "round trip changed the envelope");
    let mut out2 = Vec::new();
    again.encode(&mut out2);
    assert_eq!(out2, out, "re-encoding is not a fixed point");
});
