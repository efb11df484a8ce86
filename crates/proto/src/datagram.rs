//! The datagram form of a stream item ([`Delivery::Datagram`](crate::Delivery::Datagram)):
//! `varint(id) ++ varint(zigzag(ident)) ++ varint(sent_us) ++ payload`, one item per QUIC
//! datagram.

use crate::codec::{get_varint, put_varint, DecodeError};

/// One decoded datagram item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatagramItem<'a> {
    /// The subscription.
    pub id: u32,
    /// The item's ident.
    pub ident: i64,
    /// Send time, microseconds since the Unix epoch (sender's clock).
    pub sent_us: u64,
    /// The item's bytes.
    pub payload: &'a [u8],
}

/// Now, in microseconds since the Unix epoch: the clock of every item's `sent_us` (here and
/// in [`crate::LatestHeader`]), which gateways stamp and clients compare with their own.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The header for an item; the payload follows it in the same datagram.
pub fn header(id: u32, ident: i64, sent_us: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(24);
    put_varint(u64::from(id), &mut out);
    put_varint(((ident << 1) ^ (ident >> 63)) as u64, &mut out);
    put_varint(sent_us, &mut out);
    out
}

/// Decodes a datagram.
///
/// # Errors
/// [`DecodeError::Invalid`] for a truncated or malformed header.
pub fn decode(datagram: &[u8]) -> Result<DatagramItem<'_>, DecodeError> {
    let mut at = 0;
    let mut next = |what: &str| -> Result<u64, DecodeError> {
        let (v, used) = get_varint(&datagram[at..])?
            .ok_or_else(|| DecodeError::Invalid(format!("datagram cut in its {what}")))?;
        at += used;
        Ok(v)
    };
    let id = u32::try_from(next("id")?)
        .map_err(|_| DecodeError::Invalid("subscription id over u32".into()))?;
    let z = next("ident")?;
    let ident = ((z >> 1) as i64) ^ -((z & 1) as i64);
    let sent_us = next("timestamp")?;
    Ok(DatagramItem {
        id,
        ident,
        sent_us,
        payload: &datagram[at..],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bytes() {
        let mut d = header(3, -2, 300);
        assert_eq!(d, vec![3, 3, 0xac, 0x02]);
        d.extend_from_slice(b"xy");
        assert_eq!(
            decode(&d).unwrap(),
            DatagramItem {
                id: 3,
                ident: -2,
                sent_us: 300,
                payload: b"xy"
            }
        );
        for ident in [0, 1, -1, i64::MAX, i64::MIN] {
            let h = header(u32::MAX, ident, u64::MAX);
            let item = decode(&h).unwrap();
            assert_eq!(
                (item.id, item.ident, item.sent_us, item.payload.len()),
                (u32::MAX, ident, u64::MAX, 0)
            );
        }
        assert!(decode(&[]).is_err());
        assert!(decode(&[1, 0x80]).is_err());
    }
}
