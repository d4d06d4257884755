//! jwt-auth filter (in progress): the verification core. JWKS parsing
//! (`jwk`) and token verification (`verify`) are done and tested against
//! tokens minted by an independent implementation; the adapter, remote JWKS,
//! external auth and identity headers follow (issue 3).

pub mod jwk;
pub mod verify;
