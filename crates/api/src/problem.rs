//! Errors: every error answer is an RFC 9457 problem document
//! (`application/problem+json`) with a stable `code`.

use serde::{Deserialize, Serialize};

/// The media type of a [`Problem`].
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    /// Stable machine-readable code, e.g. `invalid_field`, `not_found`,
    /// `offset_gap`, `protocol_mismatch`.
    pub code: String,
    pub detail: String,
    /// For `invalid_field`: the field at fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// For `offset_gap` (a log chunk past the end of what the server has):
    /// where to push from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_offset: Option<u64>,
}
