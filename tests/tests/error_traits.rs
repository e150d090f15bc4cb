//! Every public error type of `uds` is `Error + Send + Sync + 'static`
//! (checked at compile time, as hyper does), and the errors that wrap a
//! cause hand it out as `source()`.

use std::error::Error;

/// Compiles only if `T` can cross threads and be boxed as
/// `Box<dyn Error + Send + Sync>`.
fn assert_error<T: Error + Send + Sync + 'static>() {}

/// For public error values that are not `std::error::Error` themselves.
fn assert_send_sync<T: Send + Sync + 'static>() {}

#[test]
fn every_public_error_is_send_sync_static() {
    assert_error::<uds::frame::FrameError>();
    assert_error::<uds::codec::CodecError>();
    assert_error::<uds::stream::StreamError>();
    assert_error::<uds::stream::ProtocolError>();
    assert_error::<uds::CallError<String>>();
    assert_error::<uds::auth::Denied>();
    assert_error::<uds::cred::CredError>();
    assert_error::<uds::net::NetError>();
    assert_error::<uds::rpc::RpcError>();
    assert_error::<uds::rpc::__wire::EnvelopeError>();
    assert_error::<uds::plugin::PluginError>();
    assert_error::<uds::plugin::Exited>();
    // What a handler returns; becomes an error reply, not a Rust error.
    assert_send_sync::<uds::rpc::HandlerError>();
}

#[test]
fn a_json_codec_error_has_the_serde_json_error_as_source() {
    use uds::codec::{CodecError, Decode, Json};
    let err = <Json as Decode<u32>>::decode("\"x\"".into()).unwrap_err();
    let cause = err.source().expect("a source");
    let json = cause
        .downcast_ref::<serde_json::Error>()
        .expect("a serde_json::Error");
    assert!(json.is_data(), "{json}");
    assert!(matches!(err, CodecError::Json(_)));
    // The text is still in the top error, for logs that print only it.
    assert!(err.to_string().starts_with("JSON: invalid type"), "{err}");
}

#[test]
fn a_proto_codec_error_has_the_prost_error_as_source() {
    use uds::codec::{CodecError, Decode, Proto};
    // A length-delimited field 1 whose length runs past the end.
    let err = <Proto as Decode<Msg>>::decode(bytes::Bytes::from_static(&[0x0a, 0x05])).unwrap_err();
    assert!(matches!(err, CodecError::Proto(_)));
    assert!(
        err.source()
            .and_then(|s| s.downcast_ref::<prost::DecodeError>())
            .is_some(),
        "{err:?}"
    );
}

#[test]
fn a_stream_protocol_error_says_how_as_source() {
    use uds::stream::{ProtocolError, StreamError};
    let err = StreamError::Protocol(ProtocolError::UnknownFrameType(9));
    assert_eq!(
        err.to_string(),
        "stream protocol error: unknown frame type 9"
    );
    let cause = err.source().and_then(|s| s.downcast_ref::<ProtocolError>());
    assert_eq!(cause, Some(&ProtocolError::UnknownFrameType(9)));
}

#[test]
fn a_call_error_is_transparent_over_the_rpc_error() {
    let rpc = uds::rpc::RpcError::Codec {
        message: "decoding the reply: x".into(),
    };
    let err: uds::CallError<String> = rpc.clone().into();
    assert_eq!(err.to_string(), rpc.to_string());
    let app = uds::CallError::<String>::App("no".into());
    assert_eq!(app.to_string(), "no");
    assert!(app.source().is_none());
}

#[derive(Clone, PartialEq, prost::Message)]
struct Msg {
    #[prost(bytes = "vec", tag = "1")]
    data: Vec<u8>,
}
