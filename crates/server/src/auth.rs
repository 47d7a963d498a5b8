//! Tokens: 256 random bits, shown once; only their SHA-256 is stored (the
//! format is the protocol's: [`suanli_api::token`]).

pub use suanli_api::token::{hash_token, new_token, TOKEN_PREFIX};
