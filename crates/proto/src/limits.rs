//! Protocol maxima: the most any one message may carry, whatever either side's configured
//! limits say, and the decoding rule that enforces them.
//!
//! A frame's length is checked before it is read, but postcard spends one or two bytes on an
//! element that decodes into a struct of fifty or more (an empty path is one byte, a `String`
//! is 24): a 1 MiB frame of empty `GetItem`s would decode into half a million structs. Every
//! sequence of structs in a message is therefore decoded with [`bounded`], which refuses a
//! declared length over [`MAX_SEQ_LEN`] before decoding (or allocating for) a single element.
//! Byte strings and text decode one byte for one, so the frame limit bounds them already.
//!
//! Each side's *configured* limits (a gateway's `Limits`, a client's transfer options) are
//! checked after decoding, with typed errors that name the limit; they can only be lower than
//! these maxima.

use std::{fmt, marker::PhantomData};

use serde::{
    de::{Error as _, SeqAccess, Visitor},
    Deserialize, Deserializer,
};

/// Most elements in any one sequence of a message (items of a `Get` or `Put`, entries of a
/// `PutCheck` or a listing frame, paths of a selector, runs of a `Need`).
pub const MAX_SEQ_LEN: usize = 65_536;

/// Most items in one `Get` or `Put`, entries in one `PutCheck` and paths in one selector that
/// a peer should send: the default of the gateway's configured limit, and what clients cut
/// their requests to.
pub const DEFAULT_MAX_REQUEST_ITEMS: usize = 4096;

/// Longest glob or regex of a selector, in bytes.
pub const MAX_PATTERN_LEN: usize = 4096;

/// Smallest range size an upload may use: 64 KiB.
pub const MIN_RANGE_SIZE: u64 = 64 * 1024;
/// Largest range size: 16 MiB. It is also the largest piece (a range, or a whole small
/// file) one `Get` or `Put` item may carry.
pub const MAX_RANGE_SIZE: u64 = 16 * 1024 * 1024;
/// Most ranges one file may be cut into: 2^20 (4 TiB in 4 MiB ranges). A file that would
/// need more is refused, never planned.
pub const MAX_RANGES_PER_FILE: u64 = 1 << 20;

/// Deserializes a `Vec` of at most [`MAX_SEQ_LEN`] elements, refusing a longer declared
/// length before decoding any element. For `#[serde(deserialize_with = "...")]`.
///
/// # Errors
/// The deserializer's error for a sequence that is too long or does not decode.
pub fn bounded<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    deserializer.deserialize_seq(BoundedVec(PhantomData))
}

struct BoundedVec<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for BoundedVec<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a sequence of at most {MAX_SEQ_LEN} elements")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let declared = seq.size_hint().unwrap_or(0);
        if declared > MAX_SEQ_LEN {
            return Err(A::Error::invalid_length(declared, &self));
        }
        // Never trust the declared length for more than a small first allocation.
        let mut out = Vec::with_capacity(declared.min(1024));
        while let Some(element) = seq.next_element()? {
            if out.len() == MAX_SEQ_LEN {
                return Err(A::Error::invalid_length(out.len() + 1, &self));
            }
            out.push(element);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use crate::{
        codec::{self, DecodeError},
        Request,
    };

    /// A `Get` request frame declaring `count` items, each an empty path without a range.
    fn get_with_items(count: usize) -> Vec<u8> {
        let mut body = vec![7, 1, b'r'];
        codec::put_varint(count as u64, &mut body);
        for _ in 0..count {
            body.extend([0, 0]);
        }
        let mut frame = Vec::new();
        codec::put_varint(body.len() as u64, &mut frame);
        frame.extend(body);
        frame
    }

    #[test]
    fn a_sequence_over_the_maximum_is_refused_before_its_elements() {
        let ok = get_with_items(3);
        let (request, _) = codec::decode::<Request>(&ok, 1 << 20).unwrap();
        assert!(matches!(request, Request::Get { items, .. } if items.len() == 3));
        let full = get_with_items(super::MAX_SEQ_LEN);
        assert!(codec::decode::<Request>(&full, 1 << 20).is_ok());
        let over = get_with_items(super::MAX_SEQ_LEN + 1);
        assert!(matches!(
            codec::decode::<Request>(&over, 1 << 20),
            Err(DecodeError::Invalid(_))
        ));
        // A declared billion elements with no bytes behind them: refused at the length.
        let mut body = vec![7, 1, b'r'];
        codec::put_varint(1 << 30, &mut body);
        let mut frame = Vec::new();
        codec::put_varint(body.len() as u64, &mut frame);
        frame.extend(body);
        assert!(matches!(
            codec::decode::<Request>(&frame, 1 << 20),
            Err(DecodeError::Invalid(_))
        ));
    }
}
