//! [`Payload`]: an encoded message in up to three pieces, so that a large
//! byte field is sent from where it already is rather than copied.

use bytes::{Bytes, BytesMut};

/// An encoded message: its bytes are `head`, then (for a protobuf message
/// with a large `bytes` field held as `Bytes`) that field's own bytes and
/// the rest of the message. The RPC layer writes the pieces with one
/// `writev`, so the large field is never copied on its way to the socket.
///
/// Made by [`Encode::encode_payload`](super::Encode::encode_payload); any
/// `Bytes` is a one-piece payload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Payload {
    head: Bytes,
    /// The large piece and what follows it; both empty for one piece.
    rest: [Bytes; 2],
}

impl Payload {
    /// A message in three pieces (only protobuf encoding makes them).
    #[cfg_attr(not(feature = "proto"), allow(dead_code))]
    pub(crate) fn pieces(head: Bytes, big: Bytes, tail: Bytes) -> Self {
        Payload {
            head,
            rest: [big, tail],
        }
    }

    /// The encoded length in bytes.
    pub fn len(&self) -> usize {
        self.head.len() + self.rest[0].len() + self.rest[1].len()
    }

    /// Whether the message is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first piece.
    pub(crate) fn head(&self) -> &Bytes {
        &self.head
    }

    /// The pieces after the first (none for a one-piece payload).
    pub(crate) fn rest(&self) -> &[Bytes] {
        if self.rest[0].is_empty() && self.rest[1].is_empty() {
            &[]
        } else {
            &self.rest
        }
    }

    /// The message as one `Bytes` (copied together if it is in pieces).
    pub fn into_bytes(self) -> Bytes {
        if self.rest().is_empty() {
            return self.head;
        }
        let mut all = BytesMut::with_capacity(self.len());
        all.extend_from_slice(&self.head);
        for piece in &self.rest {
            all.extend_from_slice(piece);
        }
        all.freeze()
    }
}

impl From<Bytes> for Payload {
    fn from(head: Bytes) -> Self {
        Payload {
            head,
            rest: [Bytes::new(), Bytes::new()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_join_in_order() {
        let p = Payload::pieces("ab".into(), "cde".into(), "f".into());
        assert_eq!(p.len(), 6);
        assert_eq!(p.rest().len(), 2);
        assert_eq!(p.into_bytes(), "abcdef");
        let one = Payload::from(Bytes::from_static(b"xyz"));
        assert!(one.rest().is_empty());
        assert_eq!(one.into_bytes(), "xyz");
        assert!(Payload::default().is_empty());
    }
}
