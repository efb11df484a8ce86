//! Per-client permissions: which subroutines, file roots, uploads and `close_gateway`.

use std::collections::BTreeSet;

/// A set of names a permission allows.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Allow {
    /// Every name.
    All,
    /// No name.
    Nothing,
    /// Only these names.
    Only(BTreeSet<String>),
}

impl Allow {
    /// Only the given names.
    pub fn only<I: IntoIterator<Item = S>, S: Into<String>>(names: I) -> Self {
        Self::Only(names.into_iter().map(Into::into).collect())
    }

    /// Whether `name` is allowed.
    pub fn allows(&self, name: &str) -> bool {
        match self {
            Self::All => true,
            Self::Nothing => false,
            Self::Only(set) => set.contains(name),
        }
    }
}

/// What a client may do on a gateway. The client is identified by the name in its
/// certificate when the gateway requires mutual TLS; otherwise it is anonymous and gets the
/// gateway's default permissions.
///
/// ```
/// use quicswarm::{Allow, Permissions};
///
/// // A viewer may watch the camera and read the logs, nothing else.
/// let mut viewer = Permissions::none();
/// viewer.subroutines = Allow::only(["camera"]);
/// viewer.roots = Allow::only(["logs"]);
/// assert!(viewer.subroutines.allows("camera") && !viewer.subroutines.allows("drive"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Permissions {
    /// Subroutines that may be called (stream, batch or sink).
    pub subroutines: Allow,
    /// File roots that may be listed and downloaded.
    pub roots: Allow,
    /// Whether uploads into the upload folder are allowed (if the gateway has one).
    pub upload: bool,
    /// Whether `close_gateway` is allowed.
    pub close_gateway: bool,
}

impl Permissions {
    /// Everything but `close_gateway`: the default for every client.
    pub fn all_but_close() -> Self {
        Self {
            subroutines: Allow::All,
            roots: Allow::All,
            upload: true,
            close_gateway: false,
        }
    }

    /// Nothing at all (ping still works).
    pub fn none() -> Self {
        Self {
            subroutines: Allow::Nothing,
            roots: Allow::Nothing,
            upload: false,
            close_gateway: false,
        }
    }
}

impl Default for Permissions {
    fn default() -> Self {
        Self::all_but_close()
    }
}
