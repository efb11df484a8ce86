//! The shard header of [`Delivery::Fec`](crate::Delivery::Fec): an item cut into
//! `originals` equal shards, plus `recoveries` Reed–Solomon recovery shards, one per QUIC
//! datagram. Any `originals` of the `originals + recoveries` shards rebuild the item.
//!
//! A shard's datagram is the [`crate::datagram`] header (subscription, ident, send time), then
//! `varint(len) ++ varint(originals) ++ varint(recoveries) ++ varint(index)`, then the shard's
//! bytes. Every shard of an item has the same length (even, as Reed–Solomon over GF(2¹⁶)
//! needs); the last original is padded with zeros, and `len` says where the item ends.

use crate::codec::{get_varint, put_varint, DecodeError};

/// Most shards (originals plus recoveries) of one item: with datagrams of about 1,400
/// bytes, items up to about 2.8 MB. Checked before anything is allocated for an item.
pub const MAX_SHARDS: usize = 2048;

/// Where a shard sits in its item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardHeader {
    /// The item's length in bytes.
    pub len: u64,
    /// Shards that carry the item (the last one padded).
    pub originals: u16,
    /// Recovery shards.
    pub recoveries: u16,
    /// This shard: `0..originals` an original, `originals..` a recovery shard.
    pub index: u16,
}

impl ShardHeader {
    /// Appends the header to `out`.
    pub fn put(&self, out: &mut Vec<u8>) {
        put_varint(self.len, out);
        put_varint(u64::from(self.originals), out);
        put_varint(u64::from(self.recoveries), out);
        put_varint(u64::from(self.index), out);
    }

    /// Decodes the header at the start of `payload` and checks it against the shard that
    /// follows: returns the header and the shard.
    ///
    /// # Errors
    /// [`DecodeError::Invalid`] for a truncated header, counts over [`MAX_SHARDS`] or of zero,
    /// an index past the shards, an odd or empty shard, or a `len` the originals cannot hold
    /// or would leave a whole shard unused.
    pub fn decode(payload: &[u8]) -> Result<(Self, &[u8]), DecodeError> {
        let mut at = 0;
        let mut next = |what: &str| -> Result<u64, DecodeError> {
            let (v, used) = get_varint(&payload[at..])?
                .ok_or_else(|| DecodeError::Invalid(format!("shard header cut in its {what}")))?;
            at += used;
            Ok(v)
        };
        let len = next("length")?;
        let count = |v: u64, what: &str| {
            u16::try_from(v)
                .ok()
                .filter(|&n| usize::from(n) <= MAX_SHARDS)
                .ok_or_else(|| DecodeError::Invalid(format!("{what} {v} over {MAX_SHARDS}")))
        };
        let originals = count(next("originals")?, "originals")?;
        let recoveries = count(next("recoveries")?, "recoveries")?;
        let index = count(next("index")?, "index")?;
        let shard = &payload[at..];
        let total = usize::from(originals) + usize::from(recoveries);
        let fits = |n: u64| n.checked_mul(shard.len() as u64);
        let invalid = |why: String| Err(DecodeError::Invalid(why));
        if originals == 0 || total > MAX_SHARDS {
            return invalid(format!("{originals} originals, {recoveries} recoveries"));
        }
        if usize::from(index) >= total {
            return invalid(format!("shard {index} of {total}"));
        }
        if shard.is_empty() || !shard.len().is_multiple_of(2) {
            return invalid(format!("shard of {} bytes (even, not zero)", shard.len()));
        }
        let most = fits(u64::from(originals));
        let fewest = fits(u64::from(originals) - 1);
        if most.is_none_or(|m| len > m) || (originals > 1 && fewest.is_none_or(|f| len <= f)) {
            return invalid(format!(
                "{len} bytes in {originals} shards of {}",
                shard.len()
            ));
        }
        Ok((
            Self {
                len,
                originals,
                recoveries,
                index,
            },
            shard,
        ))
    }
}

/// How to cut an item of `len` bytes for datagrams carrying at most `room` shard bytes, with
/// `percent` of recovery shards (at least one): `(originals, recoveries, shard_len)`, or
/// `None` if the item needs more than [`MAX_SHARDS`] shards or `room` is under two bytes.
///
/// ```
/// use quicswarm_proto::fec::plan;
/// // A 40 KB camera frame in datagrams of 1,400 bytes, 25% recovery.
/// assert_eq!(plan(40_000, 1_400, 25), Some((29, 8, 1_380)));
/// ```
pub fn plan(len: usize, room: usize, percent: u8) -> Option<(u16, u16, usize)> {
    let room = room & !1;
    if room == 0 {
        return None;
    }
    let originals = len.div_ceil(room).max(1);
    // Equal shards, no longer than needed: the padding stays under one shard's worth of
    // two-byte words.
    let shard_len = (len.div_ceil(originals).max(1) + 1) & !1;
    let recoveries = (originals * usize::from(percent.min(100)))
        .div_ceil(100)
        .max(1);
    if originals + recoveries > MAX_SHARDS {
        return None;
    }
    Some((
        u16::try_from(originals).ok()?,
        u16::try_from(recoveries).ok()?,
        shard_len,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(h: ShardHeader, shard: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        h.put(&mut out);
        out.extend_from_slice(shard);
        out
    }

    #[test]
    fn round_trip() {
        let h = ShardHeader {
            len: 2_759,
            originals: 2,
            recoveries: 1,
            index: 2,
        };
        let d = encoded(h, &[7; 1_380]);
        let (back, shard) = ShardHeader::decode(&d).unwrap();
        assert_eq!((back, shard.len()), (h, 1_380));
    }

    #[test]
    fn inconsistent_headers_are_refused() {
        let ok = ShardHeader {
            len: 100,
            originals: 1,
            recoveries: 1,
            index: 0,
        };
        let bad = [
            (ShardHeader { originals: 0, ..ok }, 100),
            (ShardHeader { index: 2, ..ok }, 100),
            (ShardHeader { len: 101, ..ok }, 100),
            // A whole shard of padding: the item would fit one fewer.
            (
                ShardHeader {
                    len: 100,
                    originals: 2,
                    ..ok
                },
                100,
            ),
            (
                ShardHeader {
                    recoveries: MAX_SHARDS as u16,
                    ..ok
                },
                100,
            ),
            (ok, 99),
            (ok, 0),
        ];
        for (h, n) in bad {
            assert!(
                ShardHeader::decode(&encoded(h, &vec![0; n])).is_err(),
                "{h:?} with {n} bytes"
            );
        }
        assert!(ShardHeader::decode(&encoded(ok, &[0; 100])).is_ok());
        assert!(ShardHeader::decode(&[0x80]).is_err());
        // A count beyond u16 is refused, not truncated.
        let mut d = Vec::new();
        for v in [100u64, 1 << 16, 1, 0] {
            put_varint(v, &mut d);
        }
        assert!(ShardHeader::decode(&d).is_err());
    }

    #[test]
    fn plans_fit_their_items() {
        for len in [0usize, 1, 2, 1_379, 1_380, 1_381, 40_000, 65_537] {
            for percent in [0u8, 25, 100, 255] {
                let (k, m, shard) = plan(len, 1_381, percent).unwrap();
                assert!(shard.is_multiple_of(2) && shard <= 1_380, "{len}: {shard}");
                let (k, m) = (usize::from(k), usize::from(m));
                assert!(k * shard >= len && (k - 1) * shard < len.max(1), "{len}");
                assert!(m >= 1 && m <= k, "{len} {percent}: {m} of {k}");
            }
        }
        assert_eq!(plan(10_000_000, 1_400, 25), None);
        assert_eq!(plan(10, 1, 25), None);
    }
}
