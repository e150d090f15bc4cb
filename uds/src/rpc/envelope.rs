//! The RPC envelope: one protobuf (proto3) message per frame.
//!
//! Hand-written rather than generated with prost: decoding must hand out
//! `method` and `data` as zero-copy slices of the frame (`Bytes`), and
//! encoding must write straight into the connection's reused buffer without
//! building an owned message first — a generated struct with `String`/`Vec`
//! fields costs allocations on every call. The format is six scalar fields
//! (see `PROTOCOL.md`), small enough to keep exact by hand and by test.

use bytes::{BufMut, Bytes};

/// Field numbers of the envelope (see `PROTOCOL.md`).
pub mod field {
    /// `uint32 id = 1`: the call id.
    pub const ID: u32 = 1;
    /// `int64 exp_unix_nano = 2`: absolute deadline.
    pub const EXP_UNIX_NANO: u32 = 2;
    /// `string method = 3`.
    pub const METHOD: u32 = 3;
    /// `bytes data = 4`.
    pub const DATA: u32 = 4;
    /// `uint32 err_type = 5`.
    pub const ERR_TYPE: u32 = 5;
    /// `string err = 6`.
    pub const ERR: u32 = 6;
    /// `bool cancel = 16` (uds extension): cancel the call with this id.
    pub const CANCEL: u32 = 16;
    /// `bool app_error = 17` (uds extension): an `err_type` 4 reply whose
    /// `data` is the encoded application error value.
    pub const APP_ERROR: u32 = 17;
    /// `bool stream_item = 18` (uds extension): one item of a server stream.
    pub const STREAM_ITEM: u32 = 18;
    /// `bool stream_end = 19` (uds extension): the end of a server stream.
    pub const STREAM_END: u32 = 19;
    /// `uint32 credit = 20` (uds extension): stream items the client is
    /// ready for (in a request: the initial window; alone: a grant).
    pub const CREDIT: u32 = 20;
    /// `uint32 reason = 21` (uds extension): on an `err_type` 4 reply, why
    /// the call was refused: 1 permission denied, 2 server shutting down.
    /// Go peers ignore it and keep the code and text.
    pub const REASON: u32 = 21;
    /// `bool client_stream = 22` (uds extension): in a request, items of a
    /// client stream follow under the call's id.
    pub const CLIENT_STREAM: u32 = 22;
    /// `uint32 keepalive_ms = 23` (uds extension): in a streaming request,
    /// the longest the client wants the server silent on the call.
    pub const KEEPALIVE_MS: u32 = 23;
    /// `bool keepalive = 24` (uds extension): the call is alive (a frame
    /// that carries nothing else).
    pub const KEEPALIVE: u32 = 24;
}

const WIRE_VARINT: u32 = 0;
const WIRE_I64: u32 = 1;
const WIRE_LEN: u32 = 2;
const WIRE_I32: u32 = 5;

/// A decoded envelope. `method`, `data` and `err` share the frame's memory.
// The booleans mirror the wire's proto3 `bool` fields one to one.
#[allow(clippy::struct_excessive_bools)]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Envelope {
    /// Call id (field 1).
    pub id: u32,
    /// Absolute deadline, Unix nanoseconds; 0 = none (field 2).
    pub exp_unix_nano: i64,
    /// Method name, raw; see [`Envelope::method_str`] (field 3).
    pub method: Bytes,
    /// Argument or result (field 4).
    pub data: Bytes,
    /// 0 = no error; 1–4 as in [`ErrorCode`](super::ErrorCode) (field 5).
    pub err_type: u32,
    /// Error text, raw (field 6).
    pub err: Bytes,
    /// Cancellation request (field 16, uds extension).
    pub cancel: bool,
    /// The error reply carries an application error in `data` (field 17).
    pub app_error: bool,
    /// One item of a server stream (field 18).
    pub stream_item: bool,
    /// The end of a server stream (field 19).
    pub stream_end: bool,
    /// Stream flow-control credit (field 20).
    pub credit: u32,
    /// Why an `err_type` 4 reply refused the call (field 21): 0 none, 1
    /// permission denied, 2 shutting down.
    pub reason: u32,
    /// The request opens a client stream (field 22).
    pub client_stream: bool,
    /// Keep-alive interval asked for, in milliseconds (field 23).
    pub keepalive_ms: u32,
    /// A keep-alive frame (field 24).
    pub keepalive: bool,
}

/// Why an envelope could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The message ended inside a field.
    #[error("envelope truncated inside a field")]
    Truncated,
    /// A varint longer than 10 bytes.
    #[error("envelope has an overlong varint")]
    VarintOverflow,
    /// Field number 0, or a tag beyond the 32-bit range.
    #[error("envelope has an invalid field tag")]
    InvalidTag,
    /// A known field arrived with the wrong wire type.
    #[error("envelope field {field} has wire type {wire_type}, not the one it is declared with")]
    WrongWireType {
        /// Field number.
        field: u32,
        /// Wire type seen.
        wire_type: u32,
    },
    /// Deprecated group wire types, or an undefined wire type.
    #[error("envelope uses unsupported wire type {0}")]
    UnsupportedWireType(u32),
}

impl Envelope {
    /// Decodes an envelope from a frame body. Unknown fields are skipped, as
    /// proto3 requires; for repeated scalar fields the last one wins.
    ///
    /// # Errors
    ///
    /// [`EnvelopeError`] if the body is not a well-formed envelope (a field
    /// cut short, a bad varint, an unsupported wire type).
    pub fn decode(body: &Bytes) -> Result<Self, EnvelopeError> {
        let mut env = Envelope::default();
        let mut r = Reader { buf: body, pos: 0 };
        while r.pos < body.len() {
            let key = r.varint()?;
            let number = u32::try_from(key >> 3).map_err(|_| EnvelopeError::InvalidTag)?;
            let wire = (key & 7) as u32;
            if number == 0 {
                return Err(EnvelopeError::InvalidTag);
            }
            let expect = |want: u32| {
                if wire == want {
                    Ok(())
                } else {
                    Err(EnvelopeError::WrongWireType {
                        field: number,
                        wire_type: wire,
                    })
                }
            };
            match number {
                field::ID => {
                    expect(WIRE_VARINT)?;
                    env.id = r.varint()? as u32; // proto3 truncates to 32 bits
                }
                field::EXP_UNIX_NANO => {
                    expect(WIRE_VARINT)?;
                    env.exp_unix_nano = r.varint()?.cast_signed();
                }
                field::METHOD => {
                    expect(WIRE_LEN)?;
                    env.method = r.bytes(body)?;
                }
                field::DATA => {
                    expect(WIRE_LEN)?;
                    env.data = r.bytes(body)?;
                }
                field::ERR_TYPE => {
                    expect(WIRE_VARINT)?;
                    env.err_type = r.varint()? as u32;
                }
                field::ERR => {
                    expect(WIRE_LEN)?;
                    env.err = r.bytes(body)?;
                }
                field::CANCEL => {
                    expect(WIRE_VARINT)?;
                    env.cancel = r.varint()? != 0;
                }
                field::APP_ERROR => {
                    expect(WIRE_VARINT)?;
                    env.app_error = r.varint()? != 0;
                }
                field::STREAM_ITEM => {
                    expect(WIRE_VARINT)?;
                    env.stream_item = r.varint()? != 0;
                }
                field::STREAM_END => {
                    expect(WIRE_VARINT)?;
                    env.stream_end = r.varint()? != 0;
                }
                field::REASON => {
                    expect(WIRE_VARINT)?;
                    env.reason = r.varint()? as u32;
                }
                field::CREDIT => {
                    expect(WIRE_VARINT)?;
                    env.credit = r.varint()? as u32;
                }
                field::CLIENT_STREAM => {
                    expect(WIRE_VARINT)?;
                    env.client_stream = r.varint()? != 0;
                }
                field::KEEPALIVE_MS => {
                    expect(WIRE_VARINT)?;
                    env.keepalive_ms = r.varint()? as u32;
                }
                field::KEEPALIVE => {
                    expect(WIRE_VARINT)?;
                    env.keepalive = r.varint()? != 0;
                }
                _ => r.skip(wire)?,
            }
        }
        Ok(env)
    }

    /// The method name, if it is valid UTF-8.
    pub fn method_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.method).ok()
    }

    /// The error text, with invalid UTF-8 replaced.
    pub fn err_text(&self) -> String {
        String::from_utf8_lossy(&self.err).into_owned()
    }

    /// Encodes the envelope (all fields, defaults omitted, in field order).
    pub fn encode(&self, dst: &mut impl BufMut) {
        self.as_ref().encode(dst);
    }

    /// The encoded length in bytes.
    pub fn encoded_len(&self) -> usize {
        self.as_ref().encoded_len()
    }

    pub(crate) fn as_ref(&self) -> EnvelopeRef<'_> {
        EnvelopeRef {
            id: self.id,
            exp_unix_nano: self.exp_unix_nano,
            method: &self.method,
            data: &self.data,
            more: &[],
            err_type: self.err_type,
            err: &self.err,
            cancel: self.cancel,
            app_error: self.app_error,
            stream_item: self.stream_item,
            stream_end: self.stream_end,
            credit: self.credit,
            reason: self.reason,
            client_stream: self.client_stream,
            keepalive_ms: self.keepalive_ms,
            keepalive: self.keepalive,
        }
    }
}

/// A borrowed envelope for encoding without building owned fields.
#[allow(clippy::struct_excessive_bools)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct EnvelopeRef<'a> {
    pub(crate) id: u32,
    pub(crate) exp_unix_nano: i64,
    pub(crate) method: &'a [u8],
    pub(crate) data: &'a [u8],
    /// More of `data`, after `data` itself: the pieces of a
    /// [`Payload`](crate::codec::Payload) (usually none).
    pub(crate) more: &'a [bytes::Bytes],
    pub(crate) err_type: u32,
    pub(crate) err: &'a [u8],
    pub(crate) cancel: bool,
    pub(crate) app_error: bool,
    pub(crate) stream_item: bool,
    pub(crate) stream_end: bool,
    pub(crate) credit: u32,
    pub(crate) reason: u32,
    pub(crate) client_stream: bool,
    pub(crate) keepalive_ms: u32,
    pub(crate) keepalive: bool,
}

impl EnvelopeRef<'_> {
    /// Length of the content of `data`, with its further pieces.
    pub(crate) fn data_len(&self) -> usize {
        self.data.len() + self.more.iter().map(bytes::Bytes::len).sum::<usize>()
    }

    /// Length of everything before the content of `data`.
    pub(crate) fn prefix_len(&self) -> usize {
        let mut n = 0;
        if self.id != 0 {
            n += 1 + varint_len(u64::from(self.id));
        }
        if self.exp_unix_nano != 0 {
            n += 1 + varint_len(self.exp_unix_nano.cast_unsigned());
        }
        if !self.method.is_empty() {
            n += 1 + varint_len(self.method.len() as u64) + self.method.len();
        }
        let data_len = self.data_len();
        if data_len != 0 {
            n += 1 + varint_len(data_len as u64);
        }
        n
    }

    /// Length of everything after the content of `data`.
    pub(crate) fn suffix_len(&self) -> usize {
        let mut n = 0;
        if self.err_type != 0 {
            n += 1 + varint_len(u64::from(self.err_type));
        }
        if !self.err.is_empty() {
            n += 1 + varint_len(self.err.len() as u64) + self.err.len();
        }
        // Fields 16-20 have two-byte tags; the booleans one-byte values.
        n += 3 * usize::from(self.cancel)
            + 3 * usize::from(self.app_error)
            + 3 * usize::from(self.stream_item)
            + 3 * usize::from(self.stream_end);
        if self.credit != 0 {
            n += 2 + varint_len(u64::from(self.credit));
        }
        if self.reason != 0 {
            n += 2 + varint_len(u64::from(self.reason));
        }
        n += 3 * usize::from(self.client_stream) + 3 * usize::from(self.keepalive);
        if self.keepalive_ms != 0 {
            n += 2 + varint_len(u64::from(self.keepalive_ms));
        }
        n
    }

    pub(crate) fn encoded_len(&self) -> usize {
        self.prefix_len() + self.data_len() + self.suffix_len()
    }

    /// Writes fields 1–3 and the tag and length of field 4 (not its content).
    pub(crate) fn encode_prefix(&self, dst: &mut impl BufMut) {
        if self.id != 0 {
            put_key(dst, field::ID, WIRE_VARINT);
            put_varint(dst, u64::from(self.id));
        }
        if self.exp_unix_nano != 0 {
            put_key(dst, field::EXP_UNIX_NANO, WIRE_VARINT);
            put_varint(dst, self.exp_unix_nano.cast_unsigned());
        }
        if !self.method.is_empty() {
            put_key(dst, field::METHOD, WIRE_LEN);
            put_varint(dst, self.method.len() as u64);
            dst.put_slice(self.method);
        }
        let data_len = self.data_len();
        if data_len != 0 {
            put_key(dst, field::DATA, WIRE_LEN);
            put_varint(dst, data_len as u64);
        }
    }

    /// Writes the fields after `data`.
    pub(crate) fn encode_suffix(&self, dst: &mut impl BufMut) {
        if self.err_type != 0 {
            put_key(dst, field::ERR_TYPE, WIRE_VARINT);
            put_varint(dst, u64::from(self.err_type));
        }
        if !self.err.is_empty() {
            put_key(dst, field::ERR, WIRE_LEN);
            put_varint(dst, self.err.len() as u64);
            dst.put_slice(self.err);
        }
        for (on, number) in [
            (self.cancel, field::CANCEL),
            (self.app_error, field::APP_ERROR),
            (self.stream_item, field::STREAM_ITEM),
            (self.stream_end, field::STREAM_END),
        ] {
            if on {
                put_key(dst, number, WIRE_VARINT);
                put_varint(dst, 1);
            }
        }
        if self.credit != 0 {
            put_key(dst, field::CREDIT, WIRE_VARINT);
            put_varint(dst, u64::from(self.credit));
        }
        if self.reason != 0 {
            put_key(dst, field::REASON, WIRE_VARINT);
            put_varint(dst, u64::from(self.reason));
        }
        if self.client_stream {
            put_key(dst, field::CLIENT_STREAM, WIRE_VARINT);
            put_varint(dst, 1);
        }
        if self.keepalive_ms != 0 {
            put_key(dst, field::KEEPALIVE_MS, WIRE_VARINT);
            put_varint(dst, u64::from(self.keepalive_ms));
        }
        if self.keepalive {
            put_key(dst, field::KEEPALIVE, WIRE_VARINT);
            put_varint(dst, 1);
        }
    }

    pub(crate) fn encode(&self, dst: &mut impl BufMut) {
        self.encode_prefix(dst);
        dst.put_slice(self.data);
        for piece in self.more {
            dst.put_slice(piece);
        }
        self.encode_suffix(dst);
    }
}

fn put_key(dst: &mut impl BufMut, number: u32, wire: u32) {
    put_varint(dst, u64::from((number << 3) | wire));
}

pub(crate) fn put_varint(dst: &mut impl BufMut, mut v: u64) {
    while v >= 0x80 {
        dst.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    dst.put_u8(v as u8);
}

pub(crate) fn varint_len(v: u64) -> usize {
    // 1 byte per started group of 7 bits; 0 takes one byte.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn varint(&mut self) -> Result<u64, EnvelopeError> {
        let mut x: u64 = 0;
        for i in 0..10 {
            let b = *self.buf.get(self.pos).ok_or(EnvelopeError::Truncated)?;
            self.pos += 1;
            if i == 9 && b > 1 {
                return Err(EnvelopeError::VarintOverflow);
            }
            x |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                return Ok(x);
            }
        }
        Err(EnvelopeError::VarintOverflow)
    }

    fn len_delimited(&mut self) -> Result<std::ops::Range<usize>, EnvelopeError> {
        let len = usize::try_from(self.varint()?).map_err(|_| EnvelopeError::Truncated)?;
        let end = self
            .pos
            .checked_add(len)
            .filter(|end| *end <= self.buf.len())
            .ok_or(EnvelopeError::Truncated)?;
        let range = self.pos..end;
        self.pos = end;
        Ok(range)
    }

    fn bytes(&mut self, body: &Bytes) -> Result<Bytes, EnvelopeError> {
        let range = self.len_delimited()?;
        Ok(body.slice(range))
    }

    fn skip(&mut self, wire: u32) -> Result<(), EnvelopeError> {
        let fixed = |this: &mut Self, n: usize| {
            if this.buf.len() - this.pos < n {
                return Err(EnvelopeError::Truncated);
            }
            this.pos += n;
            Ok(())
        };
        match wire {
            WIRE_VARINT => self.varint().map(drop),
            WIRE_I64 => fixed(self, 8),
            WIRE_LEN => self.len_delimited().map(drop),
            WIRE_I32 => fixed(self, 4),
            other => Err(EnvelopeError::UnsupportedWireType(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_len_matches_encoding() {
        for v in [
            0u64,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v), "{v}");
        }
    }

    #[test]
    fn round_trip_all_fields() {
        let e = Envelope {
            id: 7,
            exp_unix_nano: -5,
            method: Bytes::from_static(b"/m"),
            data: Bytes::from_static(b"d"),
            err_type: 4,
            err: Bytes::from_static(b"e"),
            cancel: true,
            app_error: true,
            stream_item: true,
            stream_end: true,
            credit: 300,
            reason: 2,
            client_stream: true,
            keepalive_ms: 20_000,
            keepalive: true,
        };
        let mut buf = Vec::new();
        e.encode(&mut buf);
        assert_eq!(buf.len(), e.encoded_len());
        assert_eq!(Envelope::decode(&Bytes::from(buf)).unwrap(), e);
    }
}
