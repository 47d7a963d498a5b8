//! Invoices through the API: usage intervals from the store (one per task
//! per attempt, written in the same transaction as the state change that
//! starts or ends them), priced by the server's price book
//! ([`suanli_ledger`]). A tenant sees only its own invoice.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use suanli_ledger::{invoice, parse_month, Invoice, PriceBook};
use utoipa::IntoParams;

use crate::api::{AppState, Caller, Problem};
use crate::store::{now_ms, Scope};

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct BillQuery {
    /// A month, `YYYY-MM` (UTC).
    period: String,
    /// Admin only: one tenant (default: every tenant).
    tenant: Option<String>,
}

#[derive(Serialize)]
pub struct Bills {
    pub currency: String,
    pub period: String,
    pub from_ms: i64,
    pub to_ms: i64,
    pub invoices: Vec<Invoice>,
}

pub type Prices = Option<Arc<PriceBook>>;

/// Invoices for a month: the caller's own (tenant), or every tenant's or
/// one's (admin).
#[utoipa::path(get, path = "/v1/bills", tag = "bills", params(BillQuery), security(("bearer" = [])),
    responses((status = 200, description = "Invoices: line items by resource, GPU model and class; total"),
        (status = 400, description = "Bad period", body = crate::api::ProblemDoc),
        (status = 409, description = "No price book configured", body = crate::api::ProblemDoc)))]
pub async fn bills(
    State(st): State<AppState>,
    c: Caller,
    q: Result<Query<BillQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Bills>, Problem> {
    let Query(q) =
        q.map_err(|e| Problem::new(StatusCode::BAD_REQUEST, "bad_query", e.body_text()))?;
    let tenants: Vec<(i64, String)> = match (&c.0, &q.tenant) {
        (Scope::Tenant { id, name }, None) => vec![(*id, name.clone())],
        (Scope::Tenant { id, name }, Some(t)) if t == name => vec![(*id, name.clone())],
        (Scope::Tenant { .. }, Some(_)) => return Err(Problem::forbidden()),
        (Scope::Agent, _) => return Err(Problem::forbidden()),
        (Scope::Admin, Some(t)) => {
            let t = st.store.tenant_by_name(t).await?;
            vec![(t.id, t.name)]
        }
        (Scope::Admin, None) => st
            .store
            .tenants()
            .await?
            .into_iter()
            .map(|t| (t.id, t.name))
            .collect(),
    };
    let (from, to) = parse_month(&q.period).map_err(|e| Problem::invalid("period", e))?;
    let Some(book) = st.prices.clone() else {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "no_price_book",
            "this server has no price book: start it with --prices FILE (or prices = \"FILE\" in its config)",
        ));
    };
    let scope = if tenants.len() == 1 {
        Some(tenants[0].0)
    } else {
        None
    };
    let usage = st.store.usage(scope, from, to).await?;
    let now = now_ms();
    let invoices = tenants
        .iter()
        .map(|(_, name)| invoice(&book, name, &usage, from, to, now))
        .collect();
    Ok(Json(Bills {
        currency: book.currency.clone(),
        period: q.period,
        from_ms: from,
        to_ms: to,
        invoices,
    }))
}
