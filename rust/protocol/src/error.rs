use syft_mpc_transport::TransportError;

/// Errors of the MPC protocols. Transport failures keep their peer-naming message.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// Operands whose shapes do not fit the operation.
    #[error("shape error: {0}")]
    Shape(String),
    /// A protocol used with a number of parties it does not support, or a bad party id.
    #[error("party error: {0}")]
    Parties(String),
    /// The dealer received a request it cannot serve, or parties and dealer are out of step.
    #[error("dealer error: {0}")]
    Dealer(String),
}
