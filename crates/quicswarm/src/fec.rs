//! Forward error correction for [`Delivery::Fec`](crate::Delivery::Fec): an item cut into
//! datagram-sized shards plus Reed–Solomon recovery shards (the gateway's side, [`encode`]),
//! and rebuilt from whichever shards arrive (the client's side, [`Assembler`]).
//!
//! Why: on a lossy link a large item sent on a stream usually loses a packet, and its repair
//! costs a round trip. With `m` recovery shards, any `m` lost packets of an item cost nothing
//! but the recovery shards' bytes. The wire format is in [`quicswarm_proto::fec`].

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use bytes::{BufMut, Bytes, BytesMut};
use quicswarm_proto::{
    datagram,
    fec::{plan, ShardHeader},
};

/// Longest shard header: a `u64` length and three counts under 2¹⁴.
const SHARD_HEADER_MAX: usize = 10 + 3 * 2;

/// Why an item cannot be sent as shards.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EncodeError {
    /// More shards than [`quicswarm_proto::fec::MAX_SHARDS`], or no room in a datagram.
    #[error("an item of {len} bytes does not fit {max} shards of datagrams of {datagram} bytes")]
    TooLarge {
        len: usize,
        max: usize,
        datagram: usize,
    },
    /// The Reed–Solomon encoder refused the shard counts (never for a valid plan).
    #[error("reed-solomon: {0}")]
    Code(#[from] reed_solomon_simd::Error),
}

/// Cuts `data` into the datagrams of subscription `id`'s item `ident`, each at most
/// `max_datagram` bytes: the originals first, then `percent` recovery shards (at least one).
pub(crate) fn encode(
    (id, ident, sent_us): (u32, i64, u64),
    data: &[u8],
    max_datagram: usize,
    percent: u8,
) -> Result<Vec<Bytes>, EncodeError> {
    let head = datagram::header(id, ident, sent_us);
    let too_large = || EncodeError::TooLarge {
        len: data.len(),
        max: quicswarm_proto::fec::MAX_SHARDS,
        datagram: max_datagram,
    };
    let room = max_datagram
        .checked_sub(head.len() + SHARD_HEADER_MAX)
        .ok_or_else(too_large)?;
    let (originals, recoveries, shard_len) =
        plan(data.len(), room, percent).ok_or_else(too_large)?;
    let (k, m) = (usize::from(originals), usize::from(recoveries));
    let mut encoder = reed_solomon_simd::ReedSolomonEncoder::new(k, m, shard_len)?;
    // Every original is a slice of `data` but the last, padded with zeros to the shard length.
    let part =
        |i: usize| &data[(i * shard_len).min(data.len())..((i + 1) * shard_len).min(data.len())];
    let mut last = part(k - 1).to_vec();
    last.resize(shard_len, 0);
    let original = |i: usize| if i + 1 == k { &last[..] } else { part(i) };
    for i in 0..k {
        encoder.add_original_shard(original(i))?;
    }
    let result = encoder.encode()?;
    let mut out = Vec::with_capacity(k + m);
    let mut put = |index: usize, bytes: &[u8]| {
        let mut d = Vec::with_capacity(head.len() + SHARD_HEADER_MAX + shard_len);
        d.extend_from_slice(&head);
        let header = ShardHeader {
            len: data.len() as u64,
            originals,
            recoveries,
            index: index as u16,
        };
        header.put(&mut d);
        d.extend_from_slice(bytes);
        out.push(Bytes::from(d));
    };
    for i in 0..k {
        put(i, original(i));
    }
    for (j, r) in result.recovery_iter().enumerate() {
        put(k + j, r);
    }
    Ok(out)
}

/// Items being rebuilt at once: older ones still incomplete when a newer one starts are
/// given up (a shard is seldom later than the next few items).
const IN_PROGRESS: usize = 4;

/// Rebuilds items from their shards, a few at a time. Its memory is bounded by the items'
/// declared lengths, each checked against the client's item limit before anything is kept.
#[derive(Debug)]
pub(crate) struct Assembler {
    items: VecDeque<Partial>,
    max_len: usize,
    /// Items rebuilt with recovery shards (some originals were lost).
    pub(crate) repaired: u64,
    /// Items given up: some shards came, too few to rebuild them.
    pub(crate) lost: u64,
    /// Items finished (rebuilt or given up) since last taken, with the shards that came and
    /// the time from the first to the one that completed the item (zero if given up): what
    /// the client reports to the gateway.
    pub(crate) finished: Vec<(i64, u32, Duration)>,
}

#[derive(Debug)]
struct Partial {
    ident: i64,
    /// The first shard's header (its `index` aside), which every later shard must match.
    shape: (u64, u16, u16, usize),
    originals: Vec<Option<Bytes>>,
    recovery: Vec<(usize, Bytes)>,
    have: usize,
    done: bool,
    /// When its first shard arrived.
    first: Instant,
}

impl Assembler {
    /// An assembler for items of at most `max_len` bytes.
    pub(crate) fn new(max_len: usize) -> Self {
        Self {
            items: VecDeque::with_capacity(IN_PROGRESS),
            max_len,
            repaired: 0,
            lost: 0,
            finished: Vec::new(),
        }
    }

    /// Takes one shard (a datagram's payload after its item header): the whole item once
    /// enough of its shards have come, else `None`. Malformed or inconsistent shards, and
    /// shards of items already rebuilt or given up, are dropped.
    pub(crate) fn push(&mut self, ident: i64, payload: &Bytes, arrived: Instant) -> Option<Bytes> {
        let (header, shard) = ShardHeader::decode(payload).ok()?;
        if header.len > self.max_len as u64 {
            return None;
        }
        let shape = (header.len, header.originals, header.recoveries, shard.len());
        let at = match self.items.iter().position(|p| p.ident == ident) {
            Some(at) => at,
            None => self.start(ident, shape, arrived)?,
        };
        let item = &mut self.items[at];
        if item.done || item.shape != shape {
            return None;
        }
        let shard = payload.slice_ref(shard);
        let index = usize::from(header.index);
        let k = item.originals.len();
        if index < k {
            if item.originals[index].replace(shard).is_some() {
                return None;
            }
        } else if item.recovery.iter().any(|(i, _)| *i == index - k) {
            return None;
        } else {
            item.recovery.push((index - k, shard));
        }
        item.have += 1;
        if item.have < k {
            return None;
        }
        item.done = true;
        let originals = std::mem::take(&mut item.originals);
        let recovery = std::mem::take(&mut item.recovery);
        let have = item.have;
        let spread = arrived.saturating_duration_since(item.first);
        let rebuilt = rebuild(shape, originals, recovery);
        match &rebuilt {
            Some((_, true)) => self.repaired += 1,
            Some(_) => {}
            None => self.lost += 1,
        }
        // Shards leave in order and seldom overtake each other: an older item still short of
        // shards once this one is whole will not get them.
        self.give_up_before(ident);
        self.finished.push((ident, have as u32, spread));
        rebuilt.map(|(b, _)| b)
    }

    /// Gives up every unfinished item older than `ident`.
    fn give_up_before(&mut self, ident: i64) {
        for p in self.items.iter_mut() {
            if p.ident < ident && !p.done {
                p.done = true;
                p.originals = Vec::new();
                p.recovery = Vec::new();
                self.lost += 1;
                self.finished.push((p.ident, p.have as u32, Duration::ZERO));
            }
        }
        self.finished.sort_unstable_by_key(|(i, ..)| *i);
    }

    /// Makes room for item `ident` and returns its place; `None` for a straggler older than
    /// every item in progress when there is no room.
    fn start(
        &mut self,
        ident: i64,
        shape: (u64, u16, u16, usize),
        first: Instant,
    ) -> Option<usize> {
        if self.items.len() == IN_PROGRESS {
            let (oldest, _) = self.items.iter().enumerate().min_by_key(|(_, p)| p.ident)?;
            if self.items[oldest].ident > ident {
                return None;
            }
            if let Some(gone) = self.items.remove(oldest) {
                if !gone.done {
                    self.lost += 1;
                    self.finished
                        .push((gone.ident, gone.have as u32, Duration::ZERO));
                }
            }
        }
        self.items.push_back(Partial {
            ident,
            shape,
            originals: vec![None; usize::from(shape.1)],
            recovery: Vec::new(),
            have: 0,
            done: false,
            first,
        });
        Some(self.items.len() - 1)
    }
}

/// The item from `k` shards: `(bytes, whether recovery shards were needed)`, or `None` if the
/// code could not rebuild it.
fn rebuild(
    (len, k, m, shard_len): (u64, u16, u16, usize),
    originals: Vec<Option<Bytes>>,
    recovery: Vec<(usize, Bytes)>,
) -> Option<(Bytes, bool)> {
    let len = usize::try_from(len).ok()?;
    let missing = originals.iter().any(Option::is_none);
    let restored = if missing {
        let present = originals
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (i, s)));
        let recovery = recovery.iter().map(|(i, s)| (*i, s));
        reed_solomon_simd::decode(usize::from(k), usize::from(m), present, recovery).ok()?
    } else {
        Default::default()
    };
    let mut out = BytesMut::with_capacity(len);
    for (i, shard) in originals.iter().enumerate() {
        let bytes: &[u8] = match shard {
            Some(s) => s,
            None => restored.get(&i)?,
        };
        let take = len.saturating_sub(i * shard_len).min(shard_len);
        out.put_slice(bytes.get(..take)?);
    }
    Some((out.freeze(), missing))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    /// The payloads after the item header, as the client's router hands them over.
    fn shards(ident: i64, data: &[u8], percent: u8) -> Vec<Bytes> {
        encode((3, ident, 9), data, 1_200, percent)
            .unwrap()
            .into_iter()
            .map(|d| {
                let item = datagram::decode(&d).unwrap();
                assert!(d.len() <= 1_200);
                assert_eq!((item.id, item.ident), (3, ident));
                d.slice_ref(item.payload)
            })
            .collect()
    }

    #[test]
    fn an_item_comes_back_whole_from_its_originals() {
        for len in [0, 1, 1_000, 1_183, 40_000] {
            let data = frame(len);
            let mut a = Assembler::new(1 << 20);
            let all = shards(1, &data, 25);
            let mut got = None;
            for s in &all {
                if let Some(b) = a.push(1, s, Instant::now()) {
                    assert!(got.is_none(), "handed out once");
                    got = Some(b);
                }
            }
            assert_eq!(got.as_deref(), Some(&data[..]), "{len} bytes");
            assert_eq!((a.repaired, a.lost), (0, 0));
        }
    }

    #[test]
    fn lost_shards_up_to_the_recoveries_are_repaired() {
        let data = frame(40_000);
        let all = shards(1, &data, 25);
        let (header, _) = ShardHeader::decode(&all[0]).unwrap();
        let m = usize::from(header.recoveries);
        assert_eq!(usize::from(header.originals) + m, all.len());
        assert!(m >= 8, "{m} recovery shards");
        // Lose a burst of m originals in the middle.
        let mut a = Assembler::new(1 << 20);
        let got: Vec<Bytes> = all
            .iter()
            .enumerate()
            .filter(|(i, _)| !(10..10 + m).contains(i))
            .filter_map(|(_, s)| a.push(1, s, Instant::now()))
            .collect();
        assert_eq!(got.len(), 1);
        assert_eq!(&got[0][..], &data[..]);
        assert_eq!(a.repaired, 1);
        // One more lost is one too many: given up when newer items push it out.
        let mut a = Assembler::new(1 << 20);
        for (i, s) in all.iter().enumerate() {
            if !(10..=10 + m).contains(&i) {
                assert!(a.push(1, s, Instant::now()).is_none());
            }
        }
        let newer = shards(2, &frame(100), 25);
        assert!(a.push(2, &newer[0], Instant::now()).is_some());
        assert_eq!((a.repaired, a.lost), (0, 1));
        // Both reported, oldest first, with the shards that came.
        let k = usize::from(header.originals);
        let finished: Vec<(i64, u32)> = a.finished.iter().map(|&(i, n, _)| (i, n)).collect();
        assert_eq!(finished, vec![(1, (k - 1) as u32), (2, 1)]);
    }

    #[test]
    fn bad_and_oversized_shards_are_dropped() {
        let data = frame(5_000);
        let all = shards(1, &data, 25);
        // Over the client's limit: nothing is kept.
        let mut a = Assembler::new(4_999);
        assert!(all.iter().all(|s| a.push(1, s, Instant::now()).is_none()));
        assert!(a.items.is_empty());
        // A shard whose shape disagrees with the item's first one is ignored.
        let mut a = Assembler::new(1 << 20);
        assert!(a.push(1, &all[0], Instant::now()).is_none());
        let other = shards(1, &frame(9_000), 25);
        assert!(a.push(1, &other[1], Instant::now()).is_none());
        assert_eq!(a.items[0].have, 1);
        assert!(a
            .push(1, &Bytes::from_static(&[0x80]), Instant::now())
            .is_none());
        // A repeated shard counts once.
        assert!(a.push(1, &all[0], Instant::now()).is_none());
        assert_eq!(a.items[0].have, 1);
    }

    #[test]
    fn a_straggler_older_than_every_item_in_progress_is_dropped() {
        let mut a = Assembler::new(1 << 20);
        for ident in 10..10 + IN_PROGRESS as i64 {
            assert!(a
                .push(ident, &shards(ident, &frame(3_000), 25)[0], Instant::now())
                .is_none());
        }
        assert!(a
            .push(1, &shards(1, &frame(3_000), 25)[0], Instant::now())
            .is_none());
        assert!(a.items.iter().all(|p| p.ident >= 10));
        assert_eq!(a.lost, 0);
    }
}
