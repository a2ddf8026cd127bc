//! MySQL packet framing over the dialer's [`Wire`]: a 3-byte little-endian
//! length, a sequence id, then the payload; payloads of 2^24-1 bytes continue
//! in the next packet.
//!
//! Reads are cancel-safe in the sense the session needs: a logical packet is
//! taken out of `rbuf` (and the sequence id advanced) only once all of its
//! parts have arrived, in one synchronous step, so a query future dropped at
//! any `.await` leaves the stream at a packet boundary the session can resume
//! from (to read the rest of a killed statement's result).

use bytes::{Buf, BufMut, BytesMut};

use crate::error::{Code, Error, Result};
use crate::stream::{Wire, MAX_MESSAGE};

/// The largest payload one packet carries; a payload of exactly this size is
/// followed by another packet of the same logical message.
pub(super) const MAX_PAYLOAD: usize = 0xFF_FFFF;

/// Command bytes (the first byte of a client command packet).
pub(super) const COM_QUIT: u8 = 0x01;
pub(super) const COM_QUERY: u8 = 0x03;
pub(super) const COM_PING: u8 = 0x0e;
pub(super) const COM_STMT_PREPARE: u8 = 0x16;
pub(super) const COM_STMT_EXECUTE: u8 = 0x17;
pub(super) const COM_STMT_CLOSE: u8 = 0x19;
pub(super) const COM_RESET_CONNECTION: u8 = 0x1f;

/// A packet from [`Link::read_in_place`]: at the front of `rbuf` up to
/// this offset (header included), or joined from several parts.
#[derive(Debug)]
pub(super) enum Packet {
    InBuf(usize),
    Joined(BytesMut),
}

impl Packet {
    /// The payload, given the `rbuf` the packet was read into.
    pub fn payload<'a>(&'a self, rbuf: &'a [u8]) -> &'a [u8] {
        match self {
            Packet::InBuf(end) => rbuf.get(4..*end).unwrap_or_default(),
            Packet::Joined(payload) => payload,
        }
    }
}

/// The wire plus the packet sequence id.
pub(super) struct Link {
    pub wire: Wire,
    /// The sequence id of the next packet, read or written. Every command
    /// starts again at 0; the server numbers its replies on from there.
    pub seq: u8,
}

impl Link {
    pub fn new(wire: Wire) -> Link {
        Link { wire, seq: 0 }
    }

    /// The next logical packet's payload (parts joined), reading as needed.
    pub async fn read_packet(&mut self) -> Result<BytesMut> {
        match self.read_in_place().await? {
            Packet::InBuf(end) => {
                let mut raw = self.wire.rbuf.split_to(end);
                raw.advance(4);
                Ok(raw)
            }
            Packet::Joined(payload) => Ok(payload),
        }
    }

    /// The next logical packet, reading as needed, left where it is when it
    /// came in one part (almost every packet): its sequence id is checked
    /// and counted, but it stays in `rbuf` until [`Link::consume`], so that
    /// reading it costs no split of the buffer. Whoever gets it must
    /// consume it before the next `.await` (cancel safety: see the module).
    pub async fn read_in_place(&mut self) -> Result<Packet> {
        loop {
            match self.complete_packet()? {
                Some(packet) => return Ok(packet),
                None => self.wire.fill().await?,
            }
        }
    }

    /// A packet's payload.
    pub fn payload<'a>(&'a self, packet: &'a Packet) -> &'a [u8] {
        packet.payload(&self.wire.rbuf)
    }

    /// Takes a packet from [`Link::read_in_place`] out of `rbuf`.
    pub fn consume(&mut self, packet: Packet) {
        if let Packet::InBuf(end) = packet {
            self.wire.rbuf.advance(end);
        }
    }

    /// One logical packet, if all its parts are in `rbuf`, with its
    /// sequence ids checked and counted: one in a single part is left in
    /// `rbuf` ([`Packet::InBuf`]), one in several is taken out and joined.
    fn complete_packet(&mut self) -> Result<Option<Packet>> {
        let buf = &self.wire.rbuf;
        let mut offset = 0usize;
        let mut parts = 0usize;
        let end = loop {
            if buf.len() < offset + 4 {
                return Ok(None);
            }
            let len =
                u32::from_le_bytes([buf[offset], buf[offset + 1], buf[offset + 2], 0]) as usize;
            if offset + len > MAX_MESSAGE {
                return Err(self.malformed(format!("a packet of more than {} bytes", offset + len)));
            }
            if buf.len() < offset + 4 + len {
                // Make room for the whole packet in one go rather than in
                // 8 KiB steps: a big row is then a few reads, not hundreds.
                let missing = offset + 4 + len - buf.len();
                if self.wire.rbuf.capacity() - self.wire.rbuf.len() < missing {
                    self.wire.rbuf.reserve(missing);
                }
                return Ok(None);
            }
            parts += 1;
            offset += 4 + len;
            if len < MAX_PAYLOAD {
                break offset;
            }
        };
        // Everything is there: check the sequence ids, then consume.
        let mut at = 0usize;
        for _ in 0..parts {
            let seq = self.wire.rbuf[at + 3];
            if seq != self.seq {
                return Err(
                    self.malformed(format!("packet sequence {seq} where {} was due", self.seq))
                );
            }
            self.seq = self.seq.wrapping_add(1);
            let len = u32::from_le_bytes([
                self.wire.rbuf[at],
                self.wire.rbuf[at + 1],
                self.wire.rbuf[at + 2],
                0,
            ]) as usize;
            at += 4 + len;
        }
        if parts == 1 {
            return Ok(Some(Packet::InBuf(end)));
        }
        let mut raw = self.wire.rbuf.split_to(end);
        let mut joined = BytesMut::with_capacity(end - 4 * parts);
        while !raw.is_empty() {
            let len = u32::from_le_bytes([raw[0], raw[1], raw[2], 0]) as usize;
            raw.advance(4);
            joined.extend_from_slice(&raw[..len]);
            raw.advance(len);
        }
        Ok(Some(Packet::Joined(joined)))
    }

    /// Appends one logical packet made of `parts` to `wbuf`, split as the
    /// protocol requires.
    pub fn write_packet(&mut self, parts: &[&[u8]]) {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        self.wire
            .wbuf
            .reserve(total + 4 * (total / MAX_PAYLOAD + 1));
        let mut remaining = total;
        let mut part = 0usize;
        let mut offset = 0usize;
        loop {
            let chunk = remaining.min(MAX_PAYLOAD);
            let len = (chunk as u32).to_le_bytes();
            self.wire.wbuf.put_slice(&len[..3]);
            self.wire.wbuf.put_u8(self.seq);
            self.seq = self.seq.wrapping_add(1);
            let mut left = chunk;
            while left > 0 {
                let Some(p) = parts.get(part) else { break };
                let take = (p.len() - offset).min(left);
                self.wire.wbuf.put_slice(&p[offset..offset + take]);
                offset += take;
                left -= take;
                if offset == p.len() {
                    part += 1;
                    offset = 0;
                }
            }
            remaining -= chunk;
            // A chunk of exactly MAX_PAYLOAD says "more follows", so it
            // needs a successor even when that one is empty.
            if chunk < MAX_PAYLOAD {
                break;
            }
        }
    }

    /// Starts a new command: sequence 0, the command byte, then `body`.
    pub fn write_command(&mut self, command: u8, body: &[u8]) {
        self.seq = 0;
        self.write_packet(&[&[command], body]);
    }

    fn malformed(&self, what: String) -> Error {
        Error::new(
            Code::ProtocolError,
            format!("malformed packet from {}: {what}", self.wire.peer),
        )
        .with_layer(self.wire.layer)
        .with_peer(&self.wire.peer)
        .with_retryable(false)
    }
}

/// A length-encoded integer at `*pos`: `Some(None)` is the NULL marker
/// (0xFB) of a text row; `None` means the bytes run out or are invalid.
pub(super) fn lenenc(buf: &[u8], pos: &mut usize) -> Option<Option<u64>> {
    let first = *buf.get(*pos)?;
    let (value, width) = match first {
        0..=0xFA => (u64::from(first), 0),
        0xFB => {
            *pos += 1;
            return Some(None);
        }
        0xFC => (0, 2),
        0xFD => (0, 3),
        0xFE => (0, 8),
        0xFF => return None,
    };
    if width == 0 {
        *pos += 1;
        return Some(Some(value));
    }
    let bytes = buf.get(*pos + 1..*pos + 1 + width)?;
    let mut v = 0u64;
    for (i, b) in bytes.iter().enumerate() {
        v |= u64::from(*b) << (8 * i);
    }
    *pos += 1 + width;
    Some(Some(v))
}

/// A length-encoded string at `*pos`: `Some(None)` for NULL.
pub(super) fn lenenc_bytes<'a>(buf: &'a [u8], pos: &mut usize) -> Option<Option<&'a [u8]>> {
    match lenenc(buf, pos)? {
        None => Some(None),
        Some(len) => {
            let len = usize::try_from(len).ok()?;
            let end = pos.checked_add(len)?;
            let value = buf.get(*pos..end)?;
            *pos = end;
            Some(Some(value))
        }
    }
}

/// Appends a length-encoded integer.
pub(super) fn put_lenenc(buf: &mut Vec<u8>, v: u64) {
    match v {
        0..=0xFA => buf.push(v as u8),
        0xFB..=0xFFFF => {
            buf.push(0xFC);
            buf.extend_from_slice(&(v as u16).to_le_bytes());
        }
        0x1_0000..=0xFF_FFFF => {
            buf.push(0xFD);
            buf.extend_from_slice(&(v as u32).to_le_bytes()[..3]);
        }
        _ => {
            buf.push(0xFE);
            buf.extend_from_slice(&v.to_le_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::Stream;

    #[test]
    fn lenenc_round_trip() {
        for v in [
            0u64,
            1,
            250,
            251,
            252,
            65_535,
            65_536,
            0xFF_FFFF,
            0x100_0000,
            u64::MAX,
        ] {
            let mut buf = Vec::new();
            put_lenenc(&mut buf, v);
            let mut pos = 0;
            assert_eq!(lenenc(&buf, &mut pos), Some(Some(v)), "{v}");
            assert_eq!(pos, buf.len());
        }
        let mut pos = 0;
        assert_eq!(lenenc(&[0xFB], &mut pos), Some(None));
        assert_eq!(lenenc(&[0xFC, 1], &mut 0), None, "truncated");
        assert_eq!(lenenc(&[0xFF], &mut 0), None);
        let mut pos = 0;
        assert_eq!(
            lenenc_bytes(&[3, b'a', b'b', b'c', 0xFB], &mut pos),
            Some(Some(&b"abc"[..]))
        );
        assert_eq!(
            lenenc_bytes(&[3, b'a', b'b', b'c', 0xFB], &mut pos),
            Some(None)
        );
        assert_eq!(lenenc_bytes(&[5, b'a'], &mut 0), None);
    }

    async fn link() -> (Link, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        let wire = Wire::new(Stream::plain(client), addr.to_string());
        (Link::new(wire), server)
    }

    #[tokio::test]
    async fn big_payloads_split_and_join() {
        let (mut a, _peer) = link().await;
        let body = vec![7u8; MAX_PAYLOAD + 10];
        a.write_command(COM_QUERY, &body);
        // 1 + MAX_PAYLOAD + 10 bytes: one full part, one of 11 bytes.
        assert_eq!(a.wire.wbuf.len(), 4 + MAX_PAYLOAD + 4 + 11);
        assert_eq!(&a.wire.wbuf[..4], &[0xFF, 0xFF, 0xFF, 0]);
        assert_eq!(a.wire.wbuf[4 + MAX_PAYLOAD + 3], 1, "second part seq 1");
        // Read it back as a server reply: joined, sequence checked.
        let written = a.wire.wbuf.split();
        a.wire.rbuf.extend_from_slice(&written);
        a.seq = 0;
        let p = a.complete_packet().expect("ok").expect("complete");
        let p = a.payload(&p);
        assert_eq!(p.len(), MAX_PAYLOAD + 11);
        assert_eq!(p[0], COM_QUERY);
        assert_eq!(a.seq, 2);
        // Exactly MAX_PAYLOAD: an empty trailing part.
        a.write_packet(&[&vec![1u8; MAX_PAYLOAD]]);
        assert_eq!(a.wire.wbuf.len(), 4 + MAX_PAYLOAD + 4);
    }

    /// A packet in one part is read where it lies: counted, then left in
    /// the buffer until consumed; one in several parts is joined; one not
    /// all there yet is waited for; a wrong sequence id is refused.
    #[tokio::test]
    async fn packets_are_read_in_place() {
        use tokio::io::AsyncWriteExt;
        let (mut a, mut peer) = link().await;
        a.wire
            .rbuf
            .extend_from_slice(&[2, 0, 0, 0, b'a', b'b', 1, 0, 0, 1, b'c']);
        let p = a.read_in_place().await.expect("first");
        assert!(matches!(p, Packet::InBuf(6)), "{p:?}");
        assert_eq!(a.payload(&p), b"ab");
        assert_eq!((a.seq, a.wire.rbuf.len()), (1, 11), "counted, not consumed");
        a.consume(p);
        let p = a.read_in_place().await.expect("second");
        assert_eq!(a.payload(&p), b"c");
        a.consume(p);
        assert!(a.wire.rbuf.is_empty());
        assert_eq!(a.seq, 2);

        // Not all there: read_in_place reads on.
        a.wire.rbuf.extend_from_slice(&[3, 0, 0, 2, 7]);
        peer.write_all(&[8, 9]).await.expect("rest");
        let p = a.read_in_place().await.expect("completed by a read");
        assert_eq!(a.payload(&p), &[7, 8, 9]);
        a.consume(p);

        // Two parts: joined and taken out at once.
        a.seq = 0;
        a.write_command(COM_QUERY, &vec![5u8; MAX_PAYLOAD + 2]);
        let written = a.wire.wbuf.split();
        a.wire.rbuf.extend_from_slice(&written);
        a.seq = 0;
        let p = a.read_in_place().await.expect("joined");
        assert!(matches!(p, Packet::Joined(_)));
        assert_eq!(a.payload(&p).len(), MAX_PAYLOAD + 3);
        assert!(a.wire.rbuf.is_empty(), "taken out with the join");
        a.consume(p);
        assert_eq!(a.seq, 2);

        a.wire.rbuf.extend_from_slice(&[1, 0, 0, 9, 0]);
        let e = a
            .read_in_place()
            .await
            .expect_err("sequence 9 where 2 was due");
        assert_eq!(e.code(), Code::ProtocolError, "{e}");
    }

    #[tokio::test]
    async fn incomplete_and_out_of_sequence() {
        let (mut a, _peer) = link().await;
        a.wire.rbuf.extend_from_slice(&[3, 0, 0, 0, 1, 2]);
        assert!(a.complete_packet().expect("ok").is_none(), "waits for more");
        assert!(a.wire.rbuf.len() == 6, "nothing consumed");
        a.wire.rbuf.extend_from_slice(&[3]);
        let p = a.complete_packet().expect("ok").expect("packet");
        assert_eq!(a.payload(&p), &[1, 2, 3]);
        a.consume(p);
        a.wire.rbuf.extend_from_slice(&[1, 0, 0, 5, 9]);
        let e = a.complete_packet().expect_err("sequence 5 where 1 was due");
        assert_eq!(e.code(), Code::ProtocolError);
    }
}
