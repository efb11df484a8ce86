//! The destination's rules that need no network: needs as runs, bounded state files, links
//! planted where a part file goes.

use super::part::MAX_STATE_LEN;
use super::*;
use quicswarm_proto::transfer::RangeRun;

fn entry(size: u64) -> FileEntry {
    FileEntry {
        path: "big.bin".into(),
        size,
        mtime: quicswarm_proto::transfer::Mtime::default(),
        mode: 0o644,
        hash: Some([7; 32]),
    }
}

#[test]
fn needs_are_runs_and_a_state_file_is_trusted_only_within_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let dest = Destination::new(dir.path().to_path_buf(), Arc::default());
    let rs = 64 * 1024;
    let e = entry(10 * rs);
    // Nothing received yet: the whole file, not a list of every range.
    assert_eq!(dest.need(&e, rs).unwrap(), Need::Whole);
    let target = dest.target(&e.path).unwrap();
    let (part, state_path) = part_paths(&target, &[7; 32]);
    fs::write(&part, vec![0u8; 10 * rs as usize]).unwrap();
    let mut state = PartState::fresh(e.size, rs, [7; 32], 10);
    for i in [0, 1, 2, 5] {
        state.set_done(i);
    }
    write_state(&state_path, &state).unwrap();
    assert_eq!(
        dest.need(&e, rs).unwrap(),
        Need::Ranges(vec![
            RangeRun { first: 3, count: 2 },
            RangeRun { first: 6, count: 4 }
        ])
    );
    // A state file far larger than any of ours is not read.
    fs::write(&state_path, vec![1u8; MAX_STATE_LEN as usize + 1]).unwrap();
    assert!(read_state(&state_path).is_none());
    assert_eq!(dest.need(&e, rs).unwrap(), Need::Whole);
    // A file cut into more ranges than the protocol allows is refused, not planned.
    let huge = entry(1 << 52);
    assert!(matches!(
        dest.need(&huge, rs),
        Err(TransferError::LimitExceeded {
            limit: "ranges per file",
            ..
        })
    ));
}

#[cfg(unix)]
#[test]
fn a_link_planted_as_the_part_file_is_not_written_through() {
    let dir = tempfile::tempdir().unwrap();
    let dest = Destination::new(dir.path().join("in"), Arc::default());
    let rs = 64 * 1024;
    let data = vec![3u8; 2 * rs as usize];
    let mut e = entry(data.len() as u64);
    e.hash = Some(*blake3::hash(&data).as_bytes());
    let target = dest.target(&e.path).unwrap();
    let (part, _) = part_paths(&target, &e.hash.unwrap());
    let victim = dir.path().join("victim");
    fs::write(&victim, b"keep me").unwrap();
    std::os::unix::fs::symlink(&victim, &part).unwrap();
    let range = quicswarm_proto::transfer::range_at(e.size, rs, 0);
    let hash = crate::files::tree::range_hash(0, &data[..rs as usize]);
    // A fresh transfer replaces whatever stands under the part file's name.
    assert!(dest
        .write_range(&e, range, rs, &data[..rs as usize], &hash)
        .is_ok());
    assert_eq!(fs::read(&victim).unwrap(), b"keep me");
    // A resumed one (its state file says so) refuses a part file linked elsewhere.
    fs::remove_file(&part).unwrap();
    fs::hard_link(&victim, &part).unwrap();
    let second = quicswarm_proto::transfer::range_at(e.size, rs, 1);
    let hash = crate::files::tree::range_hash(second.offset, &data[rs as usize..]);
    assert!(matches!(
        dest.write_range(&e, second, rs, &data[rs as usize..], &hash),
        Err(TransferError::Refused { .. })
    ));
    assert_eq!(fs::read(&victim).unwrap(), b"keep me");
}
