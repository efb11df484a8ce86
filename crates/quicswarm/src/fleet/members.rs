//! A fleet's members and the file that lists them: one `name address [fingerprint]` line
//! per gateway.
//!
//! ```text
//! # name      address              fingerprint (optional: pins this gateway)
//! robot1      10.0.0.11:1857       sha256:3f1c…
//! robot2      robot2.local:1857
//! lab-pi      tcp://10.0.0.40:1857
//! ```
//!
//! Names become folder names (a fleet download writes into `DEST/{name}/`), so they are
//! restricted to letters, digits, `.`, `_` and `-`, at most 64 of them, not starting with a
//! dot, and unique in the file.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
};

use crate::tls::Fingerprint;

/// Most gateways one fleet file may list: a typo (a log file given as the fleet) must not
/// make a controller dial millions of addresses.
pub const MAX_MEMBERS: usize = 100_000;
/// Longest member name.
pub const MAX_NAME_LEN: usize = 64;
/// Largest fleet file read.
const MAX_FILE_LEN: u64 = 16 << 20;

/// One gateway of a fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Member {
    /// Its name in the fleet: in results, and as its folder in fleet downloads.
    pub name: String,
    /// Where it listens: `host:port`, or `tcp://host:port` for TLS over TCP.
    pub addr: String,
    /// The certificate it must show; `None` uses the controller's trust (by default, the
    /// known-gateways file: trust on first use).
    pub fingerprint: Option<Fingerprint>,
}

impl Member {
    /// A member; the name is checked as a fleet file's would be.
    ///
    /// # Errors
    /// [`FleetFileError`] for a name that is not a safe folder name.
    pub fn new(
        name: impl Into<String>,
        addr: impl Into<String>,
        fingerprint: Option<Fingerprint>,
    ) -> Result<Self, FleetFileError> {
        let name = name.into();
        check_name(&name).map_err(|message| FleetFileError::invalid(None, 0, message))?;
        Ok(Self {
            name,
            addr: addr.into(),
            fingerprint,
        })
    }
}

/// Why a fleet file (or a member list) was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FleetFileError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A line is not `name address [fingerprint]`, or breaks a rule.
    #[error("{}line {line}: {message}", .path.as_ref().map(|p| format!("{}: ", p.display())).unwrap_or_default())]
    Invalid {
        /// The file, when read from one.
        path: Option<PathBuf>,
        /// The line (from 1; 0 when not from a file).
        line: usize,
        /// What is wrong.
        message: String,
    },
}

impl FleetFileError {
    fn invalid(path: Option<&Path>, line: usize, message: impl Into<String>) -> Self {
        Self::Invalid {
            path: path.map(Path::to_path_buf),
            line,
            message: message.into(),
        }
    }
}

/// Reads a fleet file.
///
/// # Errors
/// If it cannot be read, is over 16 MiB, or a line is invalid (see [`parse`]).
pub fn load(path: &Path) -> Result<Vec<Member>, FleetFileError> {
    let read = |source| FleetFileError::Read {
        path: path.to_path_buf(),
        source,
    };
    use std::io::Read;
    // Read at most one byte past the limit, whatever the file's size says or becomes.
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(read)?
        .take(MAX_FILE_LEN + 1)
        .read_to_string(&mut text)
        .map_err(read)?;
    if text.len() as u64 > MAX_FILE_LEN {
        return Err(FleetFileError::invalid(
            Some(path),
            0,
            format!("over {MAX_FILE_LEN} bytes: too large for a fleet file"),
        ));
    }
    parse_lines(&text, Some(path))
}

/// Parses the text of a fleet file: `name address [fingerprint]` per line; blank lines and
/// `#` comments are skipped.
///
/// # Errors
/// [`FleetFileError::Invalid`] naming the first bad line: a missing address, extra fields,
/// a bad fingerprint, a bad or repeated name, or more than [`MAX_MEMBERS`] members.
///
/// ```
/// let members = quicswarm::fleet::parse("robot1 127.0.0.1:1857\n# spare\nrobot2 tcp://127.0.0.1:1858\n")?;
/// assert_eq!(members.len(), 2);
/// assert_eq!(members[1].addr, "tcp://127.0.0.1:1858");
/// assert!(quicswarm::fleet::parse("../etc 127.0.0.1:1857").is_err());
/// # Ok::<(), quicswarm::fleet::FleetFileError>(())
/// ```
pub fn parse(text: &str) -> Result<Vec<Member>, FleetFileError> {
    parse_lines(text, None)
}

fn parse_lines(text: &str, path: Option<&Path>) -> Result<Vec<Member>, FleetFileError> {
    let mut members = Vec::new();
    let mut names = HashSet::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let bad = |message: String| FleetFileError::invalid(path, line_no, message);
        let content = line.split('#').next().unwrap_or_default().trim();
        if content.is_empty() {
            continue;
        }
        let fields: Vec<&str> = content.split_whitespace().collect();
        let (name, addr, fingerprint) = match fields[..] {
            [name, addr] => (name, addr, None),
            [name, addr, fp] => {
                let fp = fp
                    .parse::<Fingerprint>()
                    .map_err(|e| bad(format!("{name}: {e}")))?;
                (name, addr, Some(fp))
            }
            [_] => return Err(bad("expected `name address [fingerprint]`".into())),
            _ => {
                return Err(bad(format!(
                    "{} fields: expected `name address [fingerprint]`",
                    fields.len()
                )))
            }
        };
        check_name(name).map_err(&bad)?;
        if !names.insert(name) {
            return Err(bad(format!("{name:?} is listed twice")));
        }
        if members.len() == MAX_MEMBERS {
            return Err(bad(format!("more than {MAX_MEMBERS} gateways")));
        }
        members.push(Member {
            name: name.to_string(),
            addr: addr.to_string(),
            fingerprint,
        });
    }
    Ok(members)
}

/// A name that is safe as one folder name on every system.
fn check_name(name: &str) -> Result<(), String> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if name.is_empty() || name.len() > MAX_NAME_LEN || !ok_chars || name.starts_with('.') {
        return Err(format!(
            "bad name {name:?}: 1 to {MAX_NAME_LEN} letters, digits, '.', '_' or '-', not starting with '.'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000001";

    #[test]
    fn lines_comments_and_fingerprints() {
        let text = format!("# fleet\n\nrobot1 10.0.0.1:1857 {FP}  # pinned\nrobot_2 host:1 \n");
        let members = parse(&text).unwrap();
        assert_eq!(members.len(), 2);
        assert_eq!(members[0].name, "robot1");
        assert_eq!(members[0].fingerprint, Some(FP.parse().unwrap()));
        assert_eq!(
            (members[1].name.as_str(), members[1].fingerprint),
            ("robot_2", None)
        );
    }

    #[test]
    fn bad_lines_name_their_number() {
        for (text, line, says) in [
            ("a 1:1\na 2:2\n", 2, "twice"),
            ("a\n", 1, "expected"),
            ("a 1:1 sha256:zz\n", 1, "fingerprint"),
            (&format!("a 1:1 {FP} extra\n") as &str, 1, "4 fields"),
            ("\n\n.. 1:1\n", 3, "bad name"),
            ("a/b 1:1\n", 1, "bad name"),
            (".hidden 1:1\n", 1, "bad name"),
        ] {
            match parse(text) {
                Err(FleetFileError::Invalid {
                    line: l, message, ..
                }) => {
                    assert_eq!(l, line, "{text:?}");
                    assert!(message.contains(says), "{text:?}: {message}");
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
        let long = "x".repeat(MAX_NAME_LEN + 1);
        assert!(parse(&format!("{long} 1:1")).is_err());
        assert!(parse(&format!("{} 1:1", &long[1..])).is_ok());
    }

    #[test]
    fn the_member_count_is_bounded_before_it_grows() {
        let text: String = (0..=MAX_MEMBERS).map(|i| format!("m{i} h:1\n")).collect();
        match parse(&text) {
            Err(FleetFileError::Invalid { line, message, .. }) => {
                assert_eq!(line, MAX_MEMBERS + 1);
                assert!(message.contains("more than"), "{message}");
            }
            other => panic!("{:?}", other.map(|m| m.len())),
        }
    }

    #[test]
    fn a_file_error_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet.txt");
        std::fs::write(&path, "ok 1:1\nbad\n").unwrap();
        let text = load(&path).unwrap_err().to_string();
        assert!(text.contains("fleet.txt: line 2"), "{text}");
        assert!(matches!(
            load(&dir.path().join("missing")),
            Err(FleetFileError::Read { .. })
        ));
        // A comment one byte over the limit: refused after reading no more than that.
        let big = dir.path().join("big.txt");
        std::fs::write(&big, vec![b'#'; MAX_FILE_LEN as usize + 1]).unwrap();
        let text = load(&big).unwrap_err().to_string();
        assert!(text.contains("too large"), "{text}");
    }
}
