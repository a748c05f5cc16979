//! What can be wrong with a WS-Management or PSRP payload. Messages quote at most a short
//! excerpt of the offending input, never whole bodies (they may carry parameter values).

/// Result with [`PsrpError`].
pub type Result<T, E = PsrpError> = std::result::Result<T, E>;

/// A payload that cannot be decoded, or a value that cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PsrpError {
    /// Not well-formed XML, or XML this codec refuses (DTDs, entity declarations).
    #[error("malformed XML: {0}")]
    Xml(String),
    /// A PSRP fragment header or sequence is wrong.
    #[error("malformed PSRP fragment: {0}")]
    Fragment(String),
    /// A PSRP message header is wrong.
    #[error("malformed PSRP message: {0}")]
    Message(String),
    /// CLIXML that does not describe a value.
    #[error("malformed CLIXML: {0}")]
    Clixml(String),
    /// A SOAP envelope that is not the WS-Management message expected.
    #[error("unexpected WS-Management message: {0}")]
    Wsman(String),
    /// Over a size limit.
    #[error("too large: {0}")]
    TooLarge(String),
}
