//! Invoices through the API: usage intervals from the store (one per task
//! per attempt, written in the same transaction as the state change that
//! starts or ends them), priced by the server's price book
//! ([`suanli_billing`]). A tenant sees only its own invoice. The economics
//! report (admin) adds capacity from the node history (`node_spans`).

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Json;
use suanli_api::{BillQuery, Bills, EconomicsQuery, EconomicsReport};
use suanli_billing::{economics, invoices, parse_month, PriceBook};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::Caller;
use super::error::Problem;
use super::state::AppState;
use crate::store::{now_ms, Scope};
use suanli_api::Problem as ProblemDoc;

pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(bills))
        .routes(routes!(economics_report))
}

/// Invoices for a month: the caller's own (tenant), or every tenant's or
/// one's (admin).
#[utoipa::path(get, path = "/v1/bills", tag = "bills", params(BillQuery), security(("bearer" = [])),
    responses((status = 200, description = "Invoices: line items by resource, GPU model and class; total", body = Bills),
        (status = 400, description = "Bad period", body = ProblemDoc),
        (status = 404, description = "No such tenant (admin's tenant=)", body = ProblemDoc),
        (status = 409, description = "No price book configured", body = ProblemDoc)))]
async fn bills(
    State(st): State<AppState>,
    c: Caller,
    q: Result<Query<BillQuery>, QueryRejection>,
) -> Result<Json<Bills>, Problem> {
    let Query(q) = q.map_err(Problem::bad_query)?;
    let tenants: Vec<(i64, String)> = match (&c.0, &q.tenant) {
        (Scope::Tenant { id, name }, None) => vec![(*id, name.clone())],
        (Scope::Tenant { id, name }, Some(t)) if t == name => vec![(*id, name.clone())],
        (Scope::Tenant { .. }, Some(_)) => return Err(Problem::forbidden()),
        (Scope::Join | Scope::Node { .. }, _) => return Err(Problem::forbidden()),
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
    let book = price_book(&st)?;
    let scope = if tenants.len() == 1 {
        Some(tenants[0].0)
    } else {
        None
    };
    let usage = st.store.usage(scope, from, to).await?;
    let now = now_ms();
    let names: Vec<&str> = tenants.iter().map(|(_, n)| n.as_str()).collect();
    let invoices = invoices(&book, &names, &usage, from, to, now);
    Ok(Json(Bills {
        currency: book.currency.clone(),
        period: q.period,
        from_ms: from,
        to_ms: to,
        invoices: invoices.iter().map(super::wire::invoice).collect(),
    }))
}

/// The operator's economics for a month (admin only): capacity GPU-hours by
/// model from the node history, sold GPU-hours, utilisation, revenue (the sum
/// of the invoices), idle capacity at list price.
#[utoipa::path(get, path = "/v1/reports/economics", tag = "bills", params(EconomicsQuery), security(("bearer" = [])),
    responses((status = 200, description = "Capacity, sold, utilisation, revenue and idle value by GPU model; every tenant's invoice", body = EconomicsReport),
        (status = 400, description = "Bad period", body = ProblemDoc),
        (status = 403, description = "Not an admin token", body = ProblemDoc),
        (status = 409, description = "No price book configured", body = ProblemDoc)))]
async fn economics_report(
    State(st): State<AppState>,
    c: Caller,
    q: Result<Query<EconomicsQuery>, QueryRejection>,
) -> Result<Json<EconomicsReport>, Problem> {
    if !matches!(c.0, Scope::Admin) {
        return Err(Problem::forbidden());
    }
    let Query(q) = q.map_err(Problem::bad_query)?;
    let (from, to) = parse_month(&q.period).map_err(|e| Problem::invalid("period", e))?;
    let book = price_book(&st)?;
    let usage = st.store.usage(None, from, to).await?;
    let spans = st.store.node_spans(from, to).await?;
    let now = now_ms();
    let e = economics(&book, &spans, &usage, from, to, now);
    Ok(Json(super::wire::economics(q.period, now, &e)))
}

fn price_book(st: &AppState) -> Result<Arc<PriceBook>, Problem> {
    st.prices.clone().ok_or_else(|| {
        Problem::new(
            StatusCode::CONFLICT,
            "no_price_book",
            "this server has no price book: start it with --prices FILE (or prices = \"FILE\" in its config)",
        )
    })
}
