//! Tenants, their quotas, and tokens.

use serde::{Deserialize, Serialize};

use crate::states::TokenScope;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Tenant {
    pub id: i64,
    pub name: String,
    /// Share weight for fair-share (DRF) queues.
    pub weight: f64,
}

/// A tenant's quota on one GPU model, in GPUs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Quota {
    pub gpu_model: String,
    pub guaranteed: f64,
    /// `None` = unlimited.
    pub max: Option<f64>,
}

/// A tenant with its quotas.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TenantView {
    pub id: i64,
    pub name: String,
    pub weight: f64,
    pub quotas: Vec<Quota>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TenantList {
    pub tenants: Vec<TenantView>,
}

/// `POST /v1/tenants`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    #[cfg_attr(feature = "openapi", schema(pattern = "^[A-Za-z0-9._-]{1,63}$"))]
    pub name: String,
    /// Its share under DRF, in (0, 1e6] (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(exclusive_minimum = 0, maximum = 1e6))]
    pub weight: Option<f64>,
}

/// `PUT /v1/tenants/{name}/quotas/{model}`, in GPUs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct QuotaSet {
    /// GPUs the tenant can always reclaim (0..=1e7).
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 1e7))]
    pub guaranteed: f64,
    /// GPUs the tenant may never exceed, at least `guaranteed`; absent =
    /// unlimited.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 1e7))]
    pub max: Option<f64>,
}

/// `POST /v1/tokens`. `scope` is text so that a wrong value is reported as
/// an invalid field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// `admin`, `tenant` (with `tenant`), `agent` (with `node` or not) or
    /// `router` (a gateway's: the router API only).
    #[cfg_attr(feature = "openapi", schema(pattern = "^(admin|tenant|agent|router)$"))]
    pub scope: String,
    /// For a tenant token: its tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(pattern = "^[A-Za-z0-9._-]{1,63}$"))]
    pub tenant: Option<String>,
    /// For an agent token: the node it is the credential of. Without it,
    /// an agent token is a join token, which can only register a node that
    /// has no live credential (and so obtain that node's credential).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(pattern = "^[A-Za-z0-9._-]{1,63}$"))]
    pub node: Option<String>,
    /// A label for people (at most 200 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(max_length = 200))]
    pub name: Option<String>,
}

/// A new token: the secret is shown once, here.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewToken {
    pub id: i64,
    pub token: String,
}

/// A token without its secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenInfo {
    pub id: i64,
    pub scope: TokenScope,
    pub tenant: Option<String>,
    /// An agent token's node (absent: a join token).
    #[serde(default)]
    pub node: Option<String>,
    pub name: String,
    pub created_ms: i64,
    pub revoked: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenList {
    pub tokens: Vec<TokenInfo>,
}

/// One entry of the audit log: who did what to what, when.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    pub id: i64,
    pub at_ms: i64,
    /// The token that acted (`token 3 (admin)`), or `server machine` for
    /// `suanli server --reset-admin`.
    pub actor: String,
    /// `token.create`, `token.revoke`, `tenant.create`, `quota.set`,
    /// `node.drain`, `node.undrain`, `node.remove`, `node.claim`,
    /// `admin.bootstrap`, `admin.reset`.
    pub action: String,
    pub target: String,
    pub detail: String,
}

/// `GET /v1/audit`: entries with id > `after`, oldest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditLog {
    pub entries: Vec<AuditEntry>,
}
