//! How a caller's arguments become a request's: any `Serialize` value as postcard, or JSON
//! text for dynamic callers.

use quicswarm_proto::Args;
use serde::Serialize;

use crate::error::CallError;

/// Subroutine arguments: any `Serialize` value travels as postcard; wrap text in [`Json`] to
/// send JSON that the gateway decodes into the subroutine's registered type.
pub trait ToArgs {
    /// Encodes the arguments.
    ///
    /// # Errors
    /// [`CallError::BadArgs`] if the value cannot be serialised.
    fn to_args(&self) -> Result<Args, CallError>;
}

impl<T: Serialize + ?Sized> ToArgs for T {
    fn to_args(&self) -> Result<Args, CallError> {
        quicswarm_proto::codec::body_to_vec(self)
            .map(Args::postcard)
            .map_err(|e| CallError::BadArgs(e.to_string()))
    }
}

/// JSON-encoded arguments, for dynamic callers: `client.call("add", &Json(r#"{"a":1,"b":2}"#))`.
#[derive(Debug, Clone, Copy)]
pub struct Json<S>(pub S);

impl<S: AsRef<str>> ToArgs for Json<S> {
    fn to_args(&self) -> Result<Args, CallError> {
        Ok(Args::json(self.0.as_ref()))
    }
}
