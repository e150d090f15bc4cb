//! Chunk framing against `PROTOCOL.md` §6.1 and §6.6 (D2–D5).

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncWriteExt, duplex};
use uds::frame::__wire::{FrameDecoder, MAX_HEADER_LEN, decode_header, encode_header, put_frame};
use uds::frame::{FrameConfig, FrameError, FrameReader, FrameWriter};

/// Vectors §1: body length → header bytes.
const HEADERS: &[(u64, &[u8])] = &[
    (0, &[0x00]),
    (1, &[0x02]),
    (5, &[0x0a]),
    (16, &[0x20]),
    (26, &[0x34]),
    (63, &[0x7e]),
    (64, &[0x80, 0x01]),
    (121, &[0xf2, 0x01]),
    (1024, &[0x80, 0x10]),
    (1 << 40, &[0x80, 0x80, 0x80, 0x80, 0x80, 0x40]),
];

#[test]
fn encoder_matches_every_header_vector() {
    for &(len, want) in HEADERS {
        let mut out = [0u8; MAX_HEADER_LEN];
        let n = encode_header(usize::try_from(len).unwrap(), &mut out);
        assert_eq!(&out[..n], want, "header for length {len}");
    }
}

#[test]
fn decoder_reads_every_header_vector() {
    for &(len, bytes) in HEADERS {
        let got = decode_header(bytes, usize::MAX).unwrap();
        assert_eq!(
            got,
            Some((bytes.len(), usize::try_from(len).unwrap())),
            "decoding {bytes:02x?}"
        );
    }
}

#[test]
fn minus_one_header_is_a_negative_length_error() {
    // Vectors §1 last row and D2: `01` is -1.
    match decode_header(&[0x01], usize::MAX) {
        Err(FrameError::NegativeLength { declared: -1 }) => {}
        other => panic!("expected NegativeLength(-1), got {other:?}"),
    }
}

#[test]
fn overflowing_varint_is_an_error_d3() {
    let d3 = [0xffu8; 11];
    for cut in 10..=11 {
        assert!(
            matches!(
                decode_header(&d3[..cut], usize::MAX),
                Err(FrameError::VarintOverflow)
            ),
            "{cut} bytes of 0xff"
        );
    }
    // A tenth byte > 1 overflows too.
    let mut ten = [0x80u8; 10];
    ten[9] = 0x02;
    assert!(matches!(
        decode_header(&ten, usize::MAX),
        Err(FrameError::VarintOverflow)
    ));
}

#[test]
fn over_limit_length_is_rejected_from_the_header_alone_d5() {
    // D5: 2^40 declared; the decoder must not ask for (or reserve) the body.
    let mut buf = BytesMut::from(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x40][..]);
    buf.extend_from_slice(&[0u8; 10]);
    let cap_before = buf.capacity();
    let err = FrameDecoder::new(1 << 20).decode(&mut buf).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("limit of 1048576"), "{text}");
    match err {
        FrameError::TooLarge { declared, max } => {
            assert_eq!(declared, 1 << 40);
            assert_eq!(max, 1 << 20);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert_eq!(buf.capacity(), cap_before, "no allocation from the length");
}

#[test]
fn frames_split_at_every_byte_decode_identically() {
    let bodies: Vec<Vec<u8>> = vec![
        b"hello".to_vec(),
        vec![7u8; 63],
        vec![9u8; 64],
        (0..=255u8).cycle().take(1024).collect(),
        b"x".to_vec(),
    ];
    let mut wire = BytesMut::new();
    for b in &bodies {
        put_frame(b, &mut wire).unwrap();
    }
    let dec = FrameDecoder::default();
    for split in 0..=wire.len() {
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for piece in [&wire[..split], &wire[split..]] {
            buf.extend_from_slice(piece);
            while let Some(f) = dec.decode(&mut buf).unwrap() {
                got.push(f.to_vec());
            }
        }
        assert_eq!(got, bodies, "split at byte {split}");
        assert!(buf.is_empty());
    }
    // And fed one byte at a time.
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    for b in &wire {
        buf.extend_from_slice(&[*b]);
        while let Some(f) = dec.decode(&mut buf).unwrap() {
            got.push(f.to_vec());
        }
    }
    assert_eq!(got, bodies);
}

#[test]
fn writing_an_empty_frame_is_refused() {
    let mut buf = BytesMut::new();
    assert!(matches!(put_frame(b"", &mut buf), Err(FrameError::Empty)));
    assert!(buf.is_empty());
}

#[tokio::test]
async fn reader_reads_pieces_written_one_byte_at_a_time() {
    let (mut tx, rx) = duplex(1);
    let mut reader = FrameReader::new(rx);
    let writer = tokio::spawn(async move {
        // A1 from the vectors: header 0x34 (26) + 26-byte envelope.
        let mut frame = vec![0x34u8];
        frame.extend_from_slice(&[0xab; 26]);
        for b in frame {
            tx.write_all(&[b]).await.unwrap();
        }
    });
    let f = reader.read_frame().await.unwrap().unwrap();
    assert_eq!(&f[..], &[0xab; 26][..]);
    writer.await.unwrap();
    assert!(reader.read_frame().await.unwrap().is_none(), "clean EOF");
}

#[tokio::test]
async fn truncated_body_at_eof_is_a_clean_error_d4() {
    // D4: `14` (10 bytes) + 5 bytes, then EOF.
    let (mut tx, rx) = duplex(64);
    tx.write_all(&[0x14, 0x78, 0x78, 0x78, 0x78, 0x78])
        .await
        .unwrap();
    drop(tx);
    let mut reader = FrameReader::new(rx);
    match reader.read_frame().await {
        Err(FrameError::Truncated { expected, received }) => {
            assert_eq!((expected, received), (11, 6));
        }
        other => panic!("expected Truncated, got {other:?}"),
    }
}

#[tokio::test]
async fn negative_length_on_the_stream_is_an_error_d2() {
    let (mut tx, rx) = duplex(64);
    tx.write_all(&[0x01]).await.unwrap();
    let mut reader = FrameReader::new(rx);
    assert!(matches!(
        reader.read_frame().await,
        Err(FrameError::NegativeLength { declared: -1 })
    ));
}

#[tokio::test]
async fn half_a_frame_then_silence_times_out() {
    let (mut tx, rx) = duplex(64);
    tx.write_all(&[0x0a, b'h', b'e']).await.unwrap(); // 5-byte frame, 2 sent
    let config = FrameConfig::default().frame_timeout(Some(Duration::from_millis(100)));
    let mut reader = FrameReader::with_config(rx, config);
    let started = std::time::Instant::now();
    match reader.read_frame().await {
        Err(FrameError::Timeout { after }) => assert_eq!(after, Duration::from_millis(100)),
        other => panic!("expected Timeout, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(tx);
}

#[tokio::test]
async fn idle_connection_is_not_a_frame_timeout() {
    // No byte of a frame yet: waiting is not bounded by the frame timeout.
    let (mut tx, rx) = duplex(64);
    let config = FrameConfig::default().frame_timeout(Some(Duration::from_millis(50)));
    let mut reader = FrameReader::with_config(rx, config);
    let late = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        tx.write_all(&[0x02, b'z']).await.unwrap();
        tx
    });
    assert_eq!(
        reader.read_frame().await.unwrap().as_deref(),
        Some(&b"z"[..])
    );
    drop(late.await.unwrap());
}

#[tokio::test]
async fn max_frame_len_is_configurable_on_the_stream() {
    let (a, b) = duplex(4096);
    let mut w = FrameWriter::new(a);
    w.write_frame(&[1u8; 101]).await.unwrap();
    let config = FrameConfig::default().max_frame_len(100);
    let mut r = FrameReader::with_config(b, config);
    assert!(matches!(
        r.read_frame().await,
        Err(FrameError::TooLarge {
            declared: 101,
            max: 100
        })
    ));
}

#[tokio::test]
async fn large_frames_round_trip_through_the_vectored_path() {
    let (a, b) = duplex(64 * 1024);
    let body: Vec<u8> = (0..1_024_000u32).map(|i| (i % 251) as u8).collect();
    let expect = body.clone();
    let writer = tokio::spawn(async move {
        let mut w = FrameWriter::new(a);
        w.write_frame(&body).await.unwrap();
        w.queue(b"small").unwrap();
        w.write_frame(&body).await.unwrap();
    });
    let mut r = FrameReader::new(b);
    assert_eq!(r.read_frame().await.unwrap().unwrap(), expect);
    assert_eq!(r.read_frame().await.unwrap().unwrap(), &b"small"[..]);
    assert_eq!(r.read_frame().await.unwrap().unwrap(), expect);
    writer.await.unwrap();
    assert!(r.read_frame().await.unwrap().is_none());
}

#[tokio::test]
async fn zero_length_frame_reads_as_empty_body() {
    // A5: the Go writer never sends one, but a peer may; the frame layer
    // yields it and the RPC layer rejects it as an envelope.
    let (mut tx, rx) = duplex(64);
    tx.write_all(&[0x00, 0x02, b'k']).await.unwrap();
    let mut r = FrameReader::new(rx);
    assert_eq!(r.read_frame().await.unwrap().unwrap().len(), 0);
    assert_eq!(r.read_frame().await.unwrap().as_deref(), Some(&b"k"[..]));
}

#[tokio::test]
async fn frame_timeout_survives_cancelled_reads() {
    // A server that polls read_frame inside select! with a tick must not
    // restart the clock each time (slowloris with one byte per tick).
    let (mut tx, rx) = duplex(64);
    let config = FrameConfig::default().frame_timeout(Some(Duration::from_millis(200)));
    let mut reader = FrameReader::with_config(rx, config);
    tx.write_all(&[0x0a]).await.unwrap(); // a 5-byte frame starts
    let trickle = tokio::spawn(async move {
        for b in b"abc" {
            tokio::time::sleep(Duration::from_millis(80)).await;
            if tx.write_all(&[*b]).await.is_err() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        drop(tx);
    });
    let start = std::time::Instant::now();
    let err = loop {
        tokio::select! {
            r = reader.read_frame() => break r.unwrap_err(),
            () = tokio::time::sleep(Duration::from_millis(30)) => {}
        }
    };
    assert!(matches!(err, FrameError::Timeout { .. }), "{err:?}");
    assert!(
        start.elapsed() < Duration::from_millis(600),
        "{:?}",
        start.elapsed()
    );
    trickle.abort();
}

#[tokio::test]
async fn writer_refuses_to_go_on_after_a_failed_write() {
    let (a, b) = duplex(16);
    let mut w = FrameWriter::new(a);
    drop(b);
    assert!(w.write_frame(&[1u8; 100]).await.is_err());
    match w.write_frame(b"next").await {
        Err(FrameError::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe),
        other => panic!("expected BrokenPipe, got {other:?}"),
    }
}

#[tokio::test]
async fn a_bare_header_does_not_reserve_its_declared_size() {
    // 15 MiB declared (under the 16 MiB default), then one body byte.
    let (mut tx, rx) = duplex(64);
    let mut hdr = [0u8; MAX_HEADER_LEN];
    let n = encode_header(15 * 1024 * 1024, &mut hdr);
    tx.write_all(&hdr[..n]).await.unwrap();
    tx.write_all(b"x").await.unwrap();
    let mut reader = FrameReader::new(rx);
    let read = tokio::time::timeout(Duration::from_millis(100), reader.read_frame()).await;
    assert!(read.is_err(), "still waiting for the body");
    let cap = reader.buffer_capacity();
    assert!(cap <= 512 * 1024, "reserved {cap} bytes for a 1-byte body");
}
