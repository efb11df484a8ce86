//! Validation of relative file paths received from a peer.
//!
//! Every path that crosses the wire is relative, `/`-separated and *portable*: it means the
//! same file on Linux, macOS and Windows and cannot step outside the folder it is joined to.
//! Both sides check every path before touching the disk, so a hostile gateway cannot make a
//! client write outside its destination, and a hostile client cannot make a gateway read or
//! write outside its roots.

use std::fmt;

/// Longest path accepted, in bytes.
pub const MAX_PATH_LEN: usize = 4096;
/// Longest path component accepted, in bytes.
pub const MAX_COMPONENT_LEN: usize = 255;

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PathError {
    /// The path is empty.
    Empty,
    /// The path is longer than [`MAX_PATH_LEN`] or a component longer than
    /// [`MAX_COMPONENT_LEN`].
    TooLong,
    /// The path contains a NUL byte.
    Nul,
    /// The path starts with `/`.
    Absolute,
    /// The path starts with a Windows drive (`C:`).
    Drive,
    /// The path contains `\` (a Windows separator, or a UNC `\\server\share` form).
    Backslash,
    /// A component is `..`.
    ParentComponent,
    /// A component is `.` or empty (`a//b`, trailing `/`).
    EmptyComponent,
    /// A component has a control character, one of `<>:"|?*`, or ends with `.` or space.
    NotPortable(String),
    /// A component is a reserved device name on Windows (`CON`, `NUL`, `COM1`, …).
    Reserved(String),
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("empty path"),
            Self::TooLong => f.write_str("path or component too long"),
            Self::Nul => f.write_str("NUL byte in path"),
            Self::Absolute => f.write_str("absolute path"),
            Self::Drive => f.write_str("path with a drive letter"),
            Self::Backslash => f.write_str("backslash in path (Windows separator or UNC form)"),
            Self::ParentComponent => f.write_str("`..` component"),
            Self::EmptyComponent => f.write_str("empty or `.` component"),
            Self::NotPortable(c) => write!(f, "component {c:?} is not portable"),
            Self::Reserved(c) => write!(f, "component {c:?} is a reserved device name"),
        }
    }
}

impl std::error::Error for PathError {}

const RESERVED: [&str; 4] = ["CON", "PRN", "AUX", "NUL"];

/// Checks that `path` is a portable relative path, and returns its components.
///
/// ```
/// use quicswarm_proto::path::{validate, PathError};
///
/// assert_eq!(validate("logs/2024/a.log").unwrap(), vec!["logs", "2024", "a.log"]);
/// assert_eq!(validate("../etc/passwd"), Err(PathError::ParentComponent));
/// assert_eq!(validate("/etc/passwd"), Err(PathError::Absolute));
/// ```
///
/// # Errors
/// The first rule the path breaks.
pub fn validate(path: &str) -> Result<Vec<&str>, PathError> {
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    if path.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong);
    }
    if path.contains('\0') {
        return Err(PathError::Nul);
    }
    if path.contains('\\') {
        return Err(PathError::Backslash);
    }
    if path.starts_with('/') {
        return Err(PathError::Absolute);
    }
    let bytes = path.as_bytes();
    if bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' {
        return Err(PathError::Drive);
    }
    path.split('/').map(validate_component).collect()
}

fn validate_component(c: &str) -> Result<&str, PathError> {
    match c {
        "" | "." => return Err(PathError::EmptyComponent),
        ".." => return Err(PathError::ParentComponent),
        _ => {}
    }
    if c.len() > MAX_COMPONENT_LEN {
        return Err(PathError::TooLong);
    }
    let bad_char =
        |ch: char| ch.is_control() || matches!(ch, '<' | '>' | ':' | '"' | '|' | '?' | '*');
    if c.chars().any(bad_char) || c.ends_with('.') || c.ends_with(' ') {
        return Err(PathError::NotPortable(c.to_string()));
    }
    let stem = c.split('.').next().unwrap_or(c).to_ascii_uppercase();
    let is_numbered = |prefix: &str| {
        stem.strip_prefix(prefix)
            .is_some_and(|n| n.len() == 1 && n.as_bytes()[0].is_ascii_digit())
    };
    if RESERVED.contains(&stem.as_str()) || is_numbered("COM") || is_numbered("LPT") {
        return Err(PathError::Reserved(c.to_string()));
    }
    Ok(c)
}

/// Joins validated components with `/`.
pub fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_paths() {
        for p in [
            "a",
            "a/b/c.log",
            "ünïcödé/файл.txt",
            "x.tar.gz",
            ".hidden",
            "a b/c d",
            "CONSOLE.txt",
            "COM10",
        ] {
            assert!(validate(p).is_ok(), "{p}");
        }
    }

    #[test]
    fn refuses_every_escape_form() {
        let cases: &[(&str, PathError)] = &[
            ("", PathError::Empty),
            ("..", PathError::ParentComponent),
            ("a/../../b", PathError::ParentComponent),
            ("/etc/passwd", PathError::Absolute),
            ("C:/Windows", PathError::Drive),
            ("c:x", PathError::Drive),
            ("\\\\server\\share\\x", PathError::Backslash),
            ("a\\..\\b", PathError::Backslash),
            ("a\0b", PathError::Nul),
            ("a//b", PathError::EmptyComponent),
            ("a/./b", PathError::EmptyComponent),
            ("a/", PathError::EmptyComponent),
            ("a/b:stream", PathError::NotPortable("b:stream".into())),
            ("a/b?", PathError::NotPortable("b?".into())),
            ("trailing.", PathError::NotPortable("trailing.".into())),
            ("space ", PathError::NotPortable("space ".into())),
            ("tab\there", PathError::NotPortable("tab\there".into())),
            ("dir/nul.txt", PathError::Reserved("nul.txt".into())),
            ("COM1", PathError::Reserved("COM1".into())),
            ("lpt9.log", PathError::Reserved("lpt9.log".into())),
        ];
        for (p, want) in cases {
            assert_eq!(
                validate(p).as_ref().map_err(Clone::clone),
                Err(want.clone()),
                "{p:?}"
            );
        }
        assert_eq!(validate(&"a".repeat(256)), Err(PathError::TooLong));
        assert_eq!(validate(&"a/".repeat(2100)), Err(PathError::TooLong));
    }
}
